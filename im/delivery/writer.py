"""Appending to inboxes: a batch of drafts archived with their seqs, each retried send deduplicated.

Many concurrent sends share one write (see ``batching.py``); how the seqs are allocated is the
allocator's business (``seqs.py``). Here: the dedup rounds, sealing bodies, and telling the tail
cache what became durable.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bson import ObjectId

from im.cluster.news import InboxNews
from im.delivery.archive import Batch, WriteAgain, Written, receipt_from_archive, with_duplicate
from im.delivery.parts import InboxParts
from im.errors import StoreUnavailable
from im.models import Draft, Receipt
from im.storage.store import dedup_key, store_errors, utcnow

__all__ = ["InboxWriter"]

log = logging.getLogger(__name__)

# A duplicate client_msg_id racing in, or a seq another node took first, stops a batch; what was not
# stored is re-checked and written again. Rounds lost to duplicates are bounded by count: more than
# this means something else is wrong. Rounds lost to other writers' seqs are bounded by the store's
# time bound instead: each such loss is another writer's progress, so a hot inbox written from several
# nodes always moves, however many rounds one writer loses on a starved host.
MAX_WRITE_ROUNDS = 10
# After losing two races in a row (a lease should have given this node its turn: Redis may be down),
# pauses grow from this, doubling, up to the cap, at random within each, so the writers' turns spread.
CONTENTION_PAUSE_SECS = 0.002
CONTENTION_PAUSE_MAX_SECS = 0.05


def contention_pause(round_: int, fraction: float) -> float:
    """The pause before writing again after the ``round_``-th lost race in a row (``fraction`` in
    [0, 1), drawn at random)."""
    return fraction * min(CONTENTION_PAUSE_MAX_SECS, CONTENTION_PAUSE_SECS * 2 ** (round_ - 1))


class InboxWriter:
    def __init__(self, parts: InboxParts) -> None:
        self._store = parts.store
        self._seqs = parts.seqs
        self._cache = parts.cache
        self._cipher = parts.cipher

    async def append(self, drafts: Sequence[Draft], *, news: InboxNews | None = None) -> list[Receipt]:
        """Durably store ``drafts`` (archived with one inbox key per recipient) and return their receipts.

        Receipts are in the order of ``drafts``. A draft whose (sender, client_msg_id) was stored before,
        or earlier in the same batch, gets the original receipt with ``duplicate=True`` and stores nothing.
        ``news`` gets the heads, epochs and entries of what this call stored.
        """
        receipts: dict[tuple[str, str], Receipt] = {}
        deadline = time.monotonic() + self._store.timeout_secs
        uncontended_rounds = 0
        round_ = 0
        while True:
            # Optimistic: the first round writes without looking for stored duplicates (retries are rare
            # and the unique index catches them); only after a rejection are the stored receipts read.
            if round_ > 0:
                pending = [d for d in drafts if d.dedup_key not in receipts]
                receipts.update(await self._stored_receipts(pending))
            fresh: dict[tuple[str, str], Draft] = {}
            for draft in drafts:
                if draft.dedup_key not in receipts:
                    fresh.setdefault(draft.dedup_key, draft)
            if not fresh:
                break
            try:
                receipts.update(await self._write(list(fresh.values()), news))
                break
            except WriteAgain as again:
                receipts.update(again.written.receipts)
                log.info("a batch of %d was stored in part (%d): %s; writing the rest again",
                         len(fresh), len(again.written.receipts), again.reason)
                uncontended_rounds += 0 if again.contended else 1
                if uncontended_rounds >= MAX_WRITE_ROUNDS or time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        "the messages could not be stored (inbox seqs or client_msg_ids kept colliding "
                        "with other writes); retry with the same client_msg_id") from None
                if again.contended and round_ > 0:
                    await asyncio.sleep(contention_pause(round_, random.random()))
                round_ += 1
        out: list[Receipt] = []
        first_of: set[tuple[str, str]] = set()
        for draft in drafts:
            receipt = receipts[draft.dedup_key]
            if not receipt.duplicate and draft.dedup_key in first_of:
                receipt = with_duplicate(receipt)
            first_of.add(draft.dedup_key)
            out.append(receipt)
        return out

    async def _stored_receipts(self, drafts: Sequence[Draft]) -> dict[tuple[str, str], Receipt]:
        if not drafts:
            return {}
        keys = list({dedup_key(*d.dedup_key) for d in drafts})
        async with store_errors("checking for duplicate sends"):
            docs = await self._store.messages.find({"dk": {"$in": keys}}).to_list(len(keys))
        return {(doc["from"], doc["cmid"]): receipt_from_archive(doc, duplicate=True) for doc in docs}

    async def _write(self, drafts: list[Draft], news: InboxNews | None) -> dict[tuple[str, str], Receipt]:
        per_inbox = Counter(user for draft in drafts for user in draft.recipients)
        cipher = self._cipher
        # Sealed before the write (and outside any transaction): a conversation's first message creates
        # its data key.
        bodies = [d.body if cipher is None else await cipher.seal(d.conv, d.body) for d in drafts]
        batch = Batch(drafts, [ObjectId() for _ in drafts], bodies, utcnow())
        try:
            written = await self._seqs.write(batch, per_inbox)
        except WriteAgain as again:
            self._remember(drafts, again.written, news)
            raise
        self._remember(drafts, written, news)
        return written.receipts

    def _remember(self, drafts: Sequence[Draft], written: Written, news: InboxNews | None) -> None:
        """What became durable goes to the tail cache (bodies in clear) for the recipients' pulls, and
        to the news for the other nodes' notifies."""
        if (self._cache is None and news is None) or not written.receipts:
            return
        per_user: dict[str, list[dict[str, Any]]] = {}
        for draft in drafts:
            receipt = written.receipts.get(draft.dedup_key)
            if receipt is None:
                continue
            for user, seq in receipt.seqs.items():
                per_user.setdefault(user, []).append({
                    "seq": seq, "msg_id": receipt.msg_id, "conv": draft.conv, "from": draft.sender,
                    "to": draft.to, "kind": draft.kind, "body": draft.body,
                    "client_msg_id": draft.client_msg_id, "ts": receipt.ts,
                })
        for user, messages in per_user.items():
            epoch = written.epochs[user]
            if self._cache is not None:
                self._cache.committed(user, epoch=epoch, messages=messages)
            if news is not None:
                news.add(user, epoch, messages)
