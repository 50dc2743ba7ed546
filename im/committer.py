"""Group commit: concurrent sends share one store transaction.

Natural batching, no timer: when no write is in flight a send is written at once (no added latency at
low load); sends arriving while a write is in flight queue up and go together in the next one. Under
load, batches grow by themselves to match what the store can absorb, and the per-transaction cost is
paid once per batch instead of once per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from im.errors import ImError, StoreUnavailable
from im.models import Draft, Receipt

__all__ = ["GroupCommitter"]

log = logging.getLogger(__name__)

WriteBatch = Callable[[Sequence[Draft]], Awaitable[list[Receipt]]]


class GroupCommitter:
    """Queues drafts and writes them in batches of at most ``max_batch`` with ``write_batch``."""

    def __init__(self, write_batch: WriteBatch, *, max_batch: int) -> None:
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._queue: deque[tuple[Draft, asyncio.Future[Receipt]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self.batches_written = 0
        self.messages_written = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, draft: Draft) -> Receipt:
        """Return the draft's receipt once its batch is durable.

        If the caller goes away (cancelled), the write still completes: the message is durable and a
        retry with the same client_msg_id gets the original receipt.
        """
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._queue.append((draft, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())
        return await asyncio.shield(future)

    async def drain(self) -> None:
        """Wait until everything queued so far is written (used at shutdown)."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush_all(self) -> None:
        try:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
                await self._flush(batch)
        finally:
            self._flusher = None

    async def _flush(self, batch: list[tuple[Draft, asyncio.Future[Receipt]]]) -> None:
        try:
            receipts = await self._write_batch([draft for draft, _ in batch])
        except ImError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception:
            log.exception("writing a batch of %d messages failed", len(batch))
            error = StoreUnavailable("the message could not be stored; retry with the same client_msg_id")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self.batches_written += 1
        self.messages_written += len(batch)
        for (_, future), receipt in zip(batch, receipts, strict=True):
            if not future.done():
                future.set_result(receipt)
