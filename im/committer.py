"""Natural batching: concurrent requests share one store round trip (group commit for sends, one
batched write for acknowledgements).

No timer: when no write is in flight a request is written at once (no added latency at low load);
requests arriving while a write is in flight queue up and go together in the next one. Under load,
batches grow by themselves to match what the store can absorb, and the per-round-trip cost is paid
once per batch instead of once per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from im.errors import ImError, StoreUnavailable
from im.models import Draft, Receipt

__all__ = ["BatchWriter", "GroupCommitter", "NaturalBatcher"]

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

# Writes a batch and returns one outcome per item, in order: a result, or the error for that item alone.
BatchWriter = Callable[[list[Item]], Awaitable[Sequence[Result | ImError]]]


class NaturalBatcher(Generic[Item, Result]):
    """Queues items and writes them in batches of at most ``max_batch`` with ``write_batch``.

    ``what`` names the items in logs; ``failure`` is what a caller hears when a batch fails unexpectedly.
    ``linger_secs`` > 0 holds the first item of an idle batcher that long so that more join it: for
    writes whose callers do not wait on them (acknowledgements), fewer and larger batches are worth
    the delay; sends use 0, their sender waits for the receipt.
    """

    def __init__(self, write_batch: BatchWriter[Item, Result], *, max_batch: int, what: str,
                 failure: str, linger_secs: float = 0.0) -> None:
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._linger_secs = linger_secs
        self._what = what
        self._failure = failure
        self._queue: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self.batches_written = 0
        self.items_written = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, item: Item) -> Result:
        """Return the item's outcome once its batch is written.

        If the caller goes away (cancelled), the write still completes: a message is durable and a
        retry with the same client_msg_id gets the original receipt.
        """
        return await self.enqueue(item)

    def enqueue(self, item: Item) -> Awaitable[Result]:
        """Queue ``item`` now (items are written in the order they were queued); await the result for
        its outcome. Cancelling that await does not cancel the write."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())
        return asyncio.shield(future)

    async def drain(self) -> None:
        """Wait until everything queued so far is written (used at shutdown)."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush_all(self) -> None:
        try:
            if self._linger_secs > 0:
                await asyncio.sleep(self._linger_secs)
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
                await self._flush(batch)
        finally:
            self._flusher = None

    async def _flush(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            outcomes = await self._write_batch([item for item, _ in batch])
        except ImError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception:
            log.exception("writing a batch of %d %s failed", len(batch), self._what)
            error = StoreUnavailable(self._failure)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self.batches_written += 1
        self.items_written += len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, ImError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


class GroupCommitter(NaturalBatcher[Draft, Receipt]):
    """Sends: one store transaction per batch of drafts (see ``im/inbox.py``)."""

    def __init__(self, write_batch: BatchWriter[Draft, Receipt], *, max_batch: int) -> None:
        super().__init__(write_batch, max_batch=max_batch, what="messages",
                         failure="the message could not be stored; retry with the same client_msg_id")
