"""Inbox counters: one document per inbox, ``{_id: user, seq, epoch}``.

A counter is where a node that does not know an inbox's head starts looking for it. Cluster writers
step it inside the transaction that archives their batch; a single node (the only writer) raises it
after the fact. Either way it never moves down, and the archive's unique inbox keys stay the truth:
``head_from_keys`` reads the keys above a counter that may be behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from im.storage.store import (
    INBOX_KEY_FIELD,
    Store,
    inbox_range,
    is_duplicate_key_only,
    new_epoch,
    store_errors,
)

__all__ = ["HEAD_PROBE_PAGE", "Head", "ensure_counters", "head_from_keys", "raise_counters",
           "read_counters", "repair_counters"]

log = logging.getLogger(__name__)

# Keys read per page when looking for an inbox's head above its counter.
HEAD_PROBE_PAGE = 1000

# An inbox's head (its highest seq) and epoch.
Head = tuple[int, str]


async def ensure_counters(store: Store, users: Sequence[str]) -> None:
    """Give every inbox of ``users`` a counter (seq 0, a fresh epoch) unless it has one.

    Registration does this; an inbox first written or read without it (an account made by an older
    version, or domain tests that skip registration) gets it on first use. The epoch then stays.
    """
    try:
        async with store_errors("creating inbox counters"):
            await store.counters.bulk_write(
                [UpdateOne({"_id": user}, {"$setOnInsert": {"seq": 0, "epoch": new_epoch()}}, upsert=True)
                 for user in users], ordered=False)
    except BulkWriteError as exc:
        if not is_duplicate_key_only(exc):
            raise
        # Two upserts raced and the other one created the counter: it is there either way.


async def read_counters(store: Store, users: Sequence[str]) -> dict[str, Head]:
    """``(seq, epoch)`` of each inbox's counter, creating the counters that are missing."""
    async with store_errors("reading inbox heads"):
        docs = {d["_id"]: (d["seq"], d["epoch"])
                async for d in store.counters.find({"_id": {"$in": list(users)}}, {"seq": 1, "epoch": 1})}
    missing = [user for user in users if user not in docs]
    if missing:
        await ensure_counters(store, missing)
        async with store_errors("reading inbox heads"):
            async for d in store.counters.find({"_id": {"$in": missing}}, {"seq": 1, "epoch": 1}):
                docs[d["_id"]] = (d["seq"], d["epoch"])
    return docs


async def head_from_keys(store: Store, user: str, at_least: int) -> int:
    """The highest seq of ``user``'s inbox in the archive's keys, knowing it is >= ``at_least``.

    An inbox has no holes, so the keys above ``at_least`` are read in bounded pages until a page is
    not full (no open-ended range query: see ``im/storage/store.py``).
    """
    head = at_least
    prefix = f"{user}/"
    while True:
        async with store_errors("reading inbox keys"):
            docs = await store.messages.find(inbox_range(user, head, head + HEAD_PROBE_PAGE),
                                             {INBOX_KEY_FIELD: 1}).to_list(HEAD_PROBE_PAGE)
        if not docs:
            return head
        head = max(int(key[len(prefix):])
                   for d in docs for key in d[INBOX_KEY_FIELD] if key.startswith(prefix))
        if len(docs) < HEAD_PROBE_PAGE:
            return head


async def raise_counters(store: Store, heads: Mapping[str, int], what: str) -> None:
    """One unordered ``$max`` per inbox: a counter only ever moves up."""
    async with store_errors(what):
        await store.counters.bulk_write(
            [UpdateOne({"_id": user}, {"$max": {"seq": head}}) for user, head in heads.items()],
            ordered=False)


async def repair_counters(store: Store, users: Sequence[str]) -> None:
    """Raise the counters of ``users`` that are behind the archive's keys up to the keys."""
    async with store_errors("reading inbox counters"):
        stored = {d["_id"]: d["seq"] async for d in store.counters.find({"_id": {"$in": list(users)}})}
    found = await asyncio.gather(*(head_from_keys(store, user, stored.get(user, 0)) for user in users))
    behind = {user: head for user, head in zip(users, found, strict=True) if head > stored.get(user, 0)}
    if behind:
        log.warning("inbox counters behind the archive for %d inbox(es); raising them", len(behind))
        await raise_counters(store, behind, "repairing inbox counters")
