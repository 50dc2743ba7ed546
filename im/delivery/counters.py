"""Inbox counters: one document per inbox, ``{_id: user, seq, epoch}``.

A counter is where a node that does not know an inbox's head starts looking for it: every node raises
the counters of the inboxes it wrote after the fact (``heads.py``), so a counter never moves down but
may be behind. The archive's unique inbox keys stay the truth: ``head_from_keys`` reads the keys above
a counter, and ``probe_heads`` looks up the keys just above heads known to be stale.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from im.storage.store import (
    INBOX_KEY_FIELD,
    Store,
    inbox_key,
    inbox_range,
    is_duplicate_key_only,
    new_epoch,
    store_errors,
)

__all__ = ["HEAD_PROBE_PAGE", "Head", "ensure_counters", "head_from_keys", "probe_heads", "raise_counters",
           "read_counters"]

log = logging.getLogger(__name__)

# Keys read per page when looking for an inbox's head above its counter.
HEAD_PROBE_PAGE = 1000
# The inbox keys one probe looks at, in all (bounds the $in of a refresh of many inboxes).
PROBE_KEYS = 2048
# Keys looked at per inbox in one probe round at most.
PROBE_WINDOW = 32


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


async def probe_heads(store: Store, heads: Mapping[str, int]) -> dict[str, int]:
    """The heads of inboxes known to be at least ``heads``: the archive's keys just above each are looked
    up together (one indexed ``$in`` per round, no range query), and an inbox has no holes, so the
    highest key found is its head unless the whole window was taken (then the next round looks on)."""
    found = dict(heads)
    pending = dict(heads)
    while pending:
        window = max(1, min(PROBE_WINDOW, PROBE_KEYS // len(pending)))
        keys = [inbox_key(user, head + i) for user, head in pending.items() for i in range(1, window + 1)]
        async with store_errors("reading inbox keys"):
            docs = await store.messages.find({INBOX_KEY_FIELD: {"$in": keys}},
                                             {INBOX_KEY_FIELD: 1}).to_list(len(keys))
        for doc in docs:
            for key in doc[INBOX_KEY_FIELD]:
                user, _, seq = key.rpartition("/")
                if user in pending and int(seq) > found[user]:
                    found[user] = int(seq)
        pending = {user: found[user] for user, head in pending.items() if found[user] >= head + window}
    return found
