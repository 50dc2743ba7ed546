"""Natural batching: concurrent requests share one store round trip (group commit for sends, one
batched write for acknowledgements).

No timer: when no write is in flight a request is written at once (no added latency at low load);
requests arriving while a write is in flight queue up and go together in the next one. Under load,
batches grow by themselves to match what the store can absorb, and the per-round-trip cost is paid
once per batch instead of once per request.

Group commit may keep several batches in flight when they touch disjoint inboxes: a batch waiting on
the store's commit (a log sync) then no longer holds up the next one, while anything that shares an
inbox with a batch in flight (or with an earlier queued item) waits, so per-inbox order is the queue's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Generic, TypeVar

from im.errors import ImError, StoreUnavailable
from im.models import Draft, Receipt

__all__ = ["BatchWriter", "GroupCommitter", "NaturalBatcher"]

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

# Writes a batch and returns one outcome per item, in order: a result, or the error for that item alone.
BatchWriter = Callable[[list[Item]], Awaitable[Sequence[Result | ImError]]]
# What an item writes to (inboxes): items sharing a key are written in queue order, never concurrently.
KeysOf = Callable[[Item], Iterable[str]]
# How far down the queue a batch looks for items it may take past a blocked one (bounds the scan).
SCAN_FACTOR = 4


class NaturalBatcher(Generic[Item, Result]):
    """Queues items and writes them in batches of at most ``max_batch`` with ``write_batch``.

    ``what`` names the items in logs; ``failure`` is what a caller hears when a batch fails unexpectedly.
    ``linger_secs`` > 0 holds the first item of an idle batcher that long so that more join it: for
    writes whose callers do not wait on them (acknowledgements), fewer and larger batches are worth
    the delay; sends use 0, their sender waits for the receipt. With ``keys_of``, up to ``max_in_flight``
    batches with disjoint keys are written at once.
    """

    def __init__(self, write_batch: BatchWriter[Item, Result], *, max_batch: int, what: str,
                 failure: str, linger_secs: float = 0.0, keys_of: KeysOf[Item] | None = None,
                 max_in_flight: int = 1) -> None:
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._linger_secs = linger_secs
        self._what = what
        self._failure = failure
        self._keys_of = keys_of
        self._max_in_flight = max_in_flight if keys_of is not None else 1
        self._queue: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._flushers: set[asyncio.Task[None]] = set()
        self._busy: Counter[str] = Counter()  # keys of the batches in flight
        self._lingering = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, item: Item) -> Result:
        """Return the item's outcome once its batch is written.

        If the caller goes away (cancelled), the write still completes: a message is durable and a
        retry with the same client_msg_id gets the original receipt.
        """
        return await self.enqueue(item)

    def enqueue(self, item: Item) -> asyncio.Future[Result]:
        """Queue ``item`` now (items are written in the order they were queued); the future gets its
        outcome. Cancelling the future (or an await of it) does not cancel the write: the batch writes
        every item it took and only skips telling a future that is already done. No ``shield`` for
        that reason: it would cost every caller one more event-loop turn per outcome."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._linger_secs > 0 and not self._flushers and not self._lingering:
            self._lingering = True
            asyncio.get_running_loop().call_later(self._linger_secs, self._linger_over)
        elif not self._lingering:
            self._start_flushers()
        return future

    async def drain(self) -> None:
        """Wait until everything queued so far is written (used at shutdown)."""
        if self._lingering:
            self._linger_over()
        while self._flushers:
            await asyncio.gather(*[asyncio.shield(f) for f in self._flushers], return_exceptions=True)

    def _linger_over(self) -> None:
        if self._lingering:
            self._lingering = False
            self._start_flushers()

    def _start_flushers(self) -> None:
        while self._queue and len(self._flushers) < self._max_in_flight:
            batch, keys = self._take()
            if not batch:
                return  # everything queued waits on a batch in flight
            self._busy.update(keys)
            task = asyncio.create_task(self._flush(batch))
            self._flushers.add(task)
            task.add_done_callback(lambda done, keys=keys: self._flushed(done, keys))

    def _flushed(self, task: asyncio.Task[None], keys: list[str]) -> None:
        self._flushers.discard(task)
        self._busy.subtract(keys)
        self._busy += Counter()  # drop the zeros
        self._start_flushers()

    def _take(self) -> tuple[list[tuple[Item, asyncio.Future[Result]]], list[str]]:
        """The next batch, in queue order, and its keys. An item is taken only when it shares no key
        with a batch in flight nor with an earlier item left queued (which keeps per-key order).
        Items sharing a key may go in the same batch: the batch writes them in queue order, and under
        load that is what batching is for (several messages to one inbox cost one counter step)."""
        if self._keys_of is None:
            count = min(self._max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(count)], []
        blocked = set(self._busy)
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        keys: list[str] = []
        left: list[tuple[Item, asyncio.Future[Result]]] = []
        scanned = 0
        while self._queue and len(batch) < self._max_batch and scanned < self._max_batch * SCAN_FACTOR:
            entry = self._queue.popleft()
            scanned += 1
            item_keys = set(self._keys_of(entry[0]))
            if item_keys & blocked:
                left.append(entry)
                blocked |= item_keys  # whatever shares a key with an item left behind waits behind it
            else:
                batch.append(entry)
                keys.extend(item_keys)
        self._queue.extendleft(reversed(left))
        return batch, keys

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
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, ImError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


def _inboxes(draft: Draft) -> tuple[str, ...]:
    return draft.recipients


class GroupCommitter(NaturalBatcher[Draft, Receipt]):
    """Sends: one store write per batch of drafts (see ``im/delivery/writer.py``); up to ``max_in_flight``
    transactions at once over disjoint inboxes."""

    def __init__(self, write_batch: BatchWriter[Draft, Receipt], *, max_batch: int,
                 max_in_flight: int) -> None:
        super().__init__(write_batch, max_batch=max_batch, what="messages",
                         failure="the message could not be stored; retry with the same client_msg_id",
                         keys_of=_inboxes, max_in_flight=max_in_flight)

    def enqueue(self, item: Draft) -> asyncio.Future[Receipt]:
        item.queued_at = asyncio.get_running_loop().time()
        return super().enqueue(item)

    def oldest_wait(self) -> float:
        """How long the oldest draft still queued has waited (0 when none is): items left behind by a
        batch go back to the front in their order, so the front is the oldest."""
        if not self._queue:
            return 0.0
        return asyncio.get_running_loop().time() - self._queue[0][0].queued_at
