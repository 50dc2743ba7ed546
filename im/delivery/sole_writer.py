"""Seq allocation when this node is the only writer of every inbox (one node, no cluster).

The node knows the head of every inbox it touched, numbers a batch from those heads and stores it with
one ordered ``insert_many``: no transaction and no counter step. Why it is safe: an ordered insert
stores a prefix of the batch, and a prefix gives every inbox a prefix of its new seqs, so no inbox gets
a hole; the unique inbox keys refuse a seq given twice (two nodes misconfigured as single, or a head
known wrong), and the heads are then read again.

Counters are raised after the fact, every ``head_save_secs``, in one write for every inbox advanced
since. A crash leaves them behind the keys, so heads are loaded as "the counter, then the keys above
it"; and the ``heads`` document of the meta collection says whether the last single node stopped
cleanly, so a cluster starting on the same database knows to repair its counters first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence

import pymongo
from pymongo.errors import BulkWriteError

from im.delivery.archive import Batch, WriteAgain, Written
from im.delivery.counters import Head, head_from_keys, raise_counters, read_counters
from im.errors import StoreUnavailable
from im.lru import LruDict
from im.models import Receipt
from im.storage.store import (
    META_COLLECTION,
    Store,
    inbox_key_conflict,
    is_duplicate_key_only,
    store_errors,
)

__all__ = ["HEADS_STATE", "SoleWriter"]

log = logging.getLogger(__name__)

# The document of the store's meta collection saying whether a single writer's heads were saved.
HEADS_STATE = "heads"
# Inbox heads kept in memory; one dropped is read again (counter, then keys) when next needed.
KNOWN_HEADS = 100_000


class SoleWriter:
    def __init__(self, store: Store, *, head_save_secs: float) -> None:
        self._store = store
        self._heads: LruDict[str, Head] = LruDict(KNOWN_HEADS)
        # Heads advanced since the last save to the counters, and the save timer.
        self._unsaved: dict[str, int] = {}
        self._save_timer: asyncio.TimerHandle | None = None
        self._head_save_secs = head_save_secs
        self._saves: set[asyncio.Task[None]] = set()

    def known(self, user: str) -> Head | None:
        return self._heads.touch(user)

    async def heads(self, users: Sequence[str]) -> dict[str, Head]:
        heads: dict[str, Head] = {}
        unknown: list[str] = []
        for user in users:
            known = self._heads.touch(user)
            if known is None:
                unknown.append(user)
            else:
                heads[user] = known
        if unknown:
            heads.update(await self._load(unknown))
        return heads

    async def _load(self, users: Sequence[str]) -> dict[str, Head]:
        """Heads read from the store: each counter, then the archive's keys above it (a counter may be
        behind after a crash)."""
        counters = await read_counters(self._store, users)
        found = await asyncio.gather(*(head_from_keys(self._store, u, counters[u][0]) for u in users))
        loaded = {user: (head, counters[user][1]) for user, head in zip(users, found, strict=True)}
        for user, head in loaded.items():
            self._heads.put(user, head)
        return loaded

    async def write(self, batch: Batch, per_inbox: Mapping[str, int]) -> Written:
        heads = await self.heads(list(per_inbox))
        archive, receipts = batch.numbered({user: heads[user][0] + 1 for user in per_inbox})
        epochs = {user: heads[user][1] for user in per_inbox}
        store = self._store
        failure: BulkWriteError | None = None
        try:
            async with store_errors("storing messages"):
                try:
                    with pymongo.timeout(store.timeout_secs):
                        await store.messages.insert_many(archive, ordered=True)
                    stored = len(archive)
                except BulkWriteError as exc:
                    if not is_duplicate_key_only(exc):
                        raise
                    stored, failure = exc.details.get("nInserted", 0), exc
        except BaseException:
            # Outcome unknown (timeout, lost store): part of the batch may be stored. The heads are
            # read again before the next write; a retry finds the stored part by client_msg_id.
            self._forget(per_inbox)
            raise
        written = Written(batch.receipts_by_key(receipts, stored), epochs)
        self._advanced(written.receipts.values())
        if failure is None:
            return written
        if inbox_key_conflict(failure):
            log.warning("inbox seqs of a batch were taken (another writer?); reading the heads again")
            self._forget(per_inbox)
            raise WriteAgain(written, "inbox seqs were taken")
        raise WriteAgain(written, "a duplicate client_msg_id raced in")

    def _forget(self, users: Iterable[str]) -> None:
        for user in users:
            self._heads.pop(user, None)

    def _advanced(self, receipts: Iterable[Receipt]) -> None:
        """Note the heads the stored receipts reached: known now, saved to the counters soon."""
        unsaved = self._unsaved
        for receipt in receipts:
            for user, seq in receipt.seqs.items():
                known = self._heads.get(user)
                if known is not None and seq > known[0]:
                    self._heads.put(user, (seq, known[1]))
                if seq > unsaved.get(user, 0):
                    unsaved[user] = seq
        if unsaved and self._save_timer is None:
            self._save_timer = asyncio.get_running_loop().call_later(self._head_save_secs, self._save_soon)

    def _save_soon(self) -> None:
        self._save_timer = None
        task = asyncio.create_task(self._save())
        self._saves.add(task)
        task.add_done_callback(self._saves.discard)

    async def _save(self, *, stopping: bool = False) -> None:
        """One unordered ``$max`` for every head advanced since the last save. A failure keeps them for
        the next save (a counter behind is only slower to start from, never wrong)."""
        unsaved, self._unsaved = self._unsaved, {}
        if not unsaved:
            return
        try:
            await raise_counters(self._store, unsaved, "saving inbox heads")
        except StoreUnavailable as exc:
            log.warning("inbox heads not saved (%s); trying again", exc.message)
            for user, seq in unsaved.items():
                if seq > self._unsaved.get(user, 0):
                    self._unsaved[user] = seq
            if not stopping and self._save_timer is None:
                self._save_timer = asyncio.get_running_loop().call_later(self._head_save_secs,
                                                                         self._save_soon)

    async def start(self) -> None:
        """Mark the counters as possibly behind until :meth:`stop` saves them (one write per start)."""
        async with store_errors("starting the inboxes"):
            await self._store.db[META_COLLECTION].update_one(
                {"_id": HEADS_STATE}, {"$set": {"saved": False}}, upsert=True)

    async def stop(self) -> None:
        """Save every head, then mark the counters as up to date (after the last batch)."""
        if self._save_timer is not None:
            self._save_timer.cancel()
            self._save_timer = None
        if self._saves:
            await asyncio.gather(*self._saves, return_exceptions=True)
        await self._save(stopping=True)
        if not self._unsaved:
            async with store_errors("saving inbox heads"):
                await self._store.db[META_COLLECTION].update_one(
                    {"_id": HEADS_STATE}, {"$set": {"saved": True}})
