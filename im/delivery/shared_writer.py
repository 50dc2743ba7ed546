"""Seq allocation when several nodes write the same inboxes (a cluster).

Seqs are claimed from the counters inside the transaction that archives the batch: the counters' write
locks order the writers of one inbox, and the transaction makes a claimed seq and its entry one
outcome, so no inbox gets a hole.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import BulkWriteError

from im.delivery.archive import Batch, WriteAgain, Written
from im.delivery.counters import Head, read_counters, repair_counters
from im.delivery.sole_writer import HEADS_STATE
from im.errors import StoreUnavailable
from im.storage.store import META_COLLECTION, Store, inbox_key_conflict, new_epoch, store_errors

__all__ = ["SharedWriter"]

log = logging.getLogger(__name__)

# Counters repaired per round at start (bounds one query's $in).
REPAIR_BATCH = 512


class StaleHeads(Exception):
    """Seqs claimed from the counters were taken in the archive: the counters are behind its keys."""


class SharedWriter:
    def __init__(self, store: Store) -> None:
        self._store = store

    def known(self, user: str) -> Head | None:
        return None  # another node may have written since: only the store knows

    async def heads(self, users: Sequence[str]) -> dict[str, Head]:
        return await read_counters(self._store, users)

    async def write(self, batch: Batch, per_inbox: Mapping[str, int]) -> Written:
        store = self._store

        async def write(session: AsyncClientSession) -> Written:
            heads, epochs = await _claim_seqs(store, per_inbox, session)
            archive, receipts = batch.numbered({user: heads[user] - n + 1 for user, n in per_inbox.items()})
            try:
                await store.messages.insert_many(archive, ordered=True, session=session)
            except BulkWriteError as exc:
                if inbox_key_conflict(exc):
                    raise StaleHeads from None  # counters behind the archive's keys: nothing is written
                raise
            return Written(batch.receipts_by_key(receipts, len(receipts)), epochs)

        # A commit whose outcome is unknown at the deadline is safe: the retry finds it by client_msg_id.
        try:
            try:
                return await store.transaction("storing messages", write)
            except StaleHeads:
                # Counters behind the keys (e.g. left by a single node that stopped before saving its
                # heads): move them up to the keys, once, and write again.
                await repair_counters(store, list(per_inbox))
                return await store.transaction("storing messages", write)
        except StaleHeads:
            raise _heads_disagree(per_inbox) from None
        except BulkWriteError as exc:  # only a duplicate client_msg_id gets here (see store_errors)
            raise WriteAgain(Written({}, {}), "a duplicate client_msg_id raced in") from exc

    async def start(self) -> None:
        """Bring the counters up to the archive's keys if a single node stopped without saving its heads
        (a counter behind its inbox's keys would hide the newest entries from pulls)."""
        meta = self._store.db[META_COLLECTION]
        async with store_errors("starting the inboxes"):
            state = await meta.find_one({"_id": HEADS_STATE})
        if state is None or state.get("saved", True):
            return
        log.warning("a single node stopped without saving inbox heads: checking every counter")
        async with store_errors("reading inbox counters"):
            users = [d["_id"] async for d in self._store.counters.find({}, {"_id": 1})]
        for start in range(0, len(users), REPAIR_BATCH):
            await repair_counters(self._store, users[start:start + REPAIR_BATCH])
        async with store_errors("starting the inboxes"):
            await meta.update_one({"_id": HEADS_STATE}, {"$set": {"saved": True}})

    async def stop(self) -> None:
        pass  # the counters are exact after every write


async def _claim_seqs(store: Store, per_inbox: Mapping[str, int],
                      session: AsyncClientSession) -> tuple[dict[str, int], dict[str, str]]:
    """Claim a block of seqs in every inbox of the batch; return the new heads and the epochs.

    The heads are read inside the transaction that holds the counters' write locks, so they are ours.
    An inbox without a counter gets one here, in the same statement.
    """
    users = list(per_inbox)
    await store.counters.bulk_write(
        [UpdateOne({"_id": user}, {"$inc": {"seq": per_inbox[user]}, "$setOnInsert": {"epoch": new_epoch()}},
                   upsert=True) for user in users],
        ordered=False, session=session)
    heads: dict[str, int] = {}
    epochs: dict[str, str] = {}
    async for doc in store.counters.find({"_id": {"$in": users}}, {"seq": 1, "epoch": 1}, session=session):
        heads[doc["_id"]] = doc["seq"]
        epochs[doc["_id"]] = doc["epoch"]
    return heads, epochs


def _heads_disagree(per_inbox: Mapping[str, int]) -> StoreUnavailable:
    """Seqs read from the counters under their lock were taken anyway: counters and inbox keys
    disagree (a counter restored or recreated apart from the archive). Nothing is written, and the
    sends fail, rather than a seq being given twice."""
    log.error("inbox counters are behind the archive's inbox keys for some of %s; refusing to write",
              sorted(per_inbox)[:10])
    return StoreUnavailable("the message store's inbox counters disagree with its archive; retry later")
