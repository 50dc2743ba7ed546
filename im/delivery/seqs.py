"""How inbox seqs are allocated: from the heads this node knows, with no transaction and no counter step.

A batch is numbered from the known heads and stored with one ordered ``insert_many``. Why no inbox ever
gets a hole, on one node or many:
- a known head is never above the committed one (``heads.py``), so the first seq a batch gives an
  inbox is at most one past its real head;
- an ordered insert stores a prefix of the batch, and a prefix gives every inbox a prefix of its new
  seqs; a document (one message, all its recipients' keys) is stored whole or not at all;
- the archive's unique inbox keys refuse a seq given twice: a writer whose head was stale (another node
  wrote since) keeps the stored prefix, reads the heads above what it knew and writes the rest again.

So several writers of one inbox need no lock: the index orders them, and the loser of a race pays one
more round trip. So that a loser does not lose every round while another node keeps writing, it takes
a short lease on what it could not write, and writers wait for another node's lease (``leases.py``);
a lease is a turn, not a lock: correctness never depends on it. A single node is the only writer and
never loses a race, unless two nodes were started as single nodes on one database, which the keys
then catch the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence

import pymongo
from pymongo.errors import BulkWriteError

from im.delivery.archive import Batch, WriteAgain, Written
from im.delivery.counters import Head
from im.delivery.heads import HeadBook
from im.delivery.leases import InboxLeases, NoLeases
from im.storage.store import Store, inbox_key_conflict, is_duplicate_key_only, store_errors

__all__ = ["Seqs"]

log = logging.getLogger(__name__)


class Seqs:
    def __init__(self, store: Store, book: HeadBook, leases: InboxLeases | None = None) -> None:
        self._store = store
        self.book = book
        self._leases: InboxLeases = leases or NoLeases()
        self._leased: set[str] = set()  # inboxes this node holds a lease on, to release once written
        # Inboxes a write of this node is numbering right now: this node's writes of one inbox take
        # turns (numbering from the same known head would make them race each other for nothing).
        self._writing: dict[str, asyncio.Future[None]] = {}

    def known(self, user: str) -> Head | None:
        """``user``'s head and epoch when a reader may answer from memory, else None."""
        return self.book.trusted(user)

    def others_write(self, users: Iterable[str]) -> None:
        """Another node wrote these inboxes (or lost a race for them): their turns matter."""
        self._leases.others_write(users)

    async def heads(self, users: Sequence[str], *, fresh: bool = False) -> dict[str, Head]:
        """The heads of ``users`` as readers may trust them (``fresh``: read from the store)."""
        if fresh:
            return await self.book.load(users)
        return await self.book.heads(users)

    async def write(self, batch: Batch, per_inbox: Mapping[str, int]) -> Written:
        """Give the batch its seqs (``per_inbox[user]`` new ones per inbox) and archive it. Raises
        :class:`~im.delivery.archive.WriteAgain` with what was stored when only part of it was."""
        users = list(per_inbox)
        while busy := [self._writing[u] for u in users if u in self._writing]:
            await asyncio.wait(busy)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for user in users:
            self._writing[user] = done
        try:
            return await self._write(batch, per_inbox, users)
        finally:
            for user in users:
                del self._writing[user]
            done.set_result(None)

    async def _write(self, batch: Batch, per_inbox: Mapping[str, int], users: list[str]) -> Written:
        await self._leases.wait_turn(users)
        heads = await self.book.heads(users, trusted_only=False)
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
            self.book.forget(list(per_inbox))
            raise
        written = Written(batch.receipts_by_key(receipts, stored), epochs)
        for receipt in written.receipts.values():
            for user, seq in receipt.seqs.items():
                self.book.learn(user, seq, own=True)
        if failure is None:
            if self._leased:
                await self._release(users)
            return written
        if inbox_key_conflict(failure):
            # Another writer took seqs of inboxes this batch writes: learn how far each of the rest went.
            rest = sorted({user for draft in batch.drafts[stored:] for user in draft.recipients})
            await self._leases.take(rest)  # our turn next: the others wait for this node's write
            self._leased.update(rest)
            known = await self.book.heads(rest, trusted_only=False)
            await self.book.refresh({user: head for user, (head, _) in known.items()})
            raise WriteAgain(written, "inbox seqs were taken by another writer", contended=True)
        raise WriteAgain(written, "a duplicate client_msg_id raced in")

    async def _release(self, users: Sequence[str]) -> None:
        mine = [user for user in users if user in self._leased]
        if mine:
            self._leased.difference_update(mine)
            await self._leases.release(mine)

    async def stop(self) -> None:
        """After the last write: save the heads this node advanced to their counters."""
        await self.book.stop()
