"""Pulls: an inbox's entries after a seq, in seq order, from memory when this node can prove it has
them, else from the archive in bounded ranges."""

from __future__ import annotations

import asyncio
from typing import Any

from im.delivery.archive import entry_projection, entry_to_message
from im.delivery.parts import InboxParts
from im.models import PullResult
from im.storage.store import inbox_range, store_errors

__all__ = ["InboxReader"]


class InboxReader:
    def __init__(self, parts: InboxParts) -> None:
        self._store = parts.store
        self._seqs = parts.seqs
        self._cache = parts.cache
        self._cipher = parts.cipher

    async def head(self, user: str) -> int:
        return (await self._seqs.heads([user]))[user][0]

    async def pull(self, user: str, *, after: int, limit: int) -> PullResult:
        """Up to ``limit`` entries with seq > ``after``, in seq order.

        The range is bounded on both sides by the head. A device behind the floor (it was idle while
        the others acknowledged) gets ``gap``: it should reload history, then go on from the floor.
        The floor and the range are read together; the floor only rises, and trimming deletes
        nothing, so a range read before a trim is still whole.
        """
        head, epoch = (await self._seqs.heads([user]))[user]
        if after > head:  # the head known here may be behind another node's write: ask the store
            head, epoch = (await self._seqs.heads([user], fresh=True))[user]
        if after == head:  # nothing new, and no gap: a floor is never above the head
            return PullResult(messages=[], next=after, head=head, epoch=epoch, more=False)
        cache = self._cache
        if cache is not None:
            page = cache.serve(user, after=after, limit=limit, head=head, epoch=epoch)
            if page is not None:
                return page
        if after > head:
            floor, docs = await self.floor(user), []
        else:
            floor, docs = await asyncio.gather(
                self.floor(user), self._range(user, after, min(after + limit, head)))
        gap = after > head or after < floor
        start = floor if gap else after
        if start != after:
            docs = await self._range(user, start, min(start + limit, head))
        end = min(start + limit, head)
        if end <= start:
            return PullResult(messages=[], next=start, head=head, epoch=epoch, gap=gap, more=False)
        messages = [entry_to_message(d) for d in docs]
        messages.sort(key=lambda m: m["seq"])
        if self._cipher is not None:
            for message in messages:
                message["body"] = await self._cipher.open(message["conv"], message["body"])
        if cache is not None:
            cache.committed(user, epoch=epoch, messages=messages)
        return PullResult(messages=messages, next=end, head=head, epoch=epoch, gap=gap, more=end < head)

    def pull_cached(self, user: str, *, after: int, limit: int) -> PullResult | None:
        """What :meth:`pull` returns, when this node trusts the head it knows and holds every entry of the
        page in memory; else None (the store must answer)."""
        known = self._seqs.known(user)
        if known is None:
            return None
        head, epoch = known
        if after == head:
            return PullResult(messages=[], next=after, head=head, epoch=epoch, more=False)
        if after > head:
            return None  # another node's write this node has not heard of yet: the store answers
        return None if self._cache is None else self._cache.serve(
            user, after=after, limit=limit, head=head, epoch=epoch)

    async def floor(self, user: str) -> int:
        """The inbox floor: every entry <= it was trimmed (every active device holds it). Kept apart from
        the counter so that acknowledgements never write the document that sends write."""
        async with store_errors("reading an inbox floor"):
            doc = await self._store.trims.find_one({"_id": user})
        return 0 if doc is None else doc["trimmed"]

    async def _range(self, user: str, start: int, end: int) -> list[dict[str, Any]]:
        """The archived messages of ``user``'s inbox with seq in (start, end], in no particular order."""
        if end <= start:
            return []
        async with store_errors("pulling an inbox"):
            return await self._store.messages.find(
                inbox_range(user, start, end), entry_projection(user)).to_list(end - start)
