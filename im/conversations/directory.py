"""Which one-to-one conversations a user has: one small document per pair, written on its first message.

Groups are listed from the ``groups`` collection; a one-to-one conversation exists nowhere else but in
the archive, whose messages cannot be grouped by peer without a scan. A pair is registered the first
time this node accepts a send of it, before that message is written, so every stored message's
conversation is listed (a pair whose write then failed has no last message and is skipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from im.lru import LruDict
from im.storage.store import store_errors, utcnow

__all__ = ["DirectConversation", "Directory"]

# Pairs this node knows are registered; registering again is idempotent, so a forgotten pair costs one write.
KNOWN_PAIRS = 200_000
# Most one-to-one conversations one listing considers (the newest by start beyond it are not listed).
MAX_LISTED_DIRECT = 2000


@dataclass(frozen=True, slots=True)
class DirectConversation:
    conv: str
    peer: str
    started: datetime


class Directory:
    def __init__(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        self._pairs = collection
        self._known: LruDict[str, bool] = LruDict(KNOWN_PAIRS)

    async def ensure_indexes(self) -> None:
        async with store_errors("creating conversation indexes"):
            await self._pairs.create_index([("members", ASCENDING)])

    def known(self, conv: str) -> bool:
        """Whether ``conv`` is registered, from memory only (False means "call :meth:`register`")."""
        return self._known.touch(conv) is not None

    async def register(self, conv: str, members: tuple[str, ...]) -> None:
        """Record the pair (idempotent); the first registration's time is the conversation's start."""
        if self.known(conv):
            return
        async with store_errors("registering a conversation"):
            await self._pairs.update_one(
                {"_id": conv}, {"$setOnInsert": {"members": sorted(set(members)), "started": utcnow()}},
                upsert=True)
        self._known.put(conv, True)

    async def of_user(self, user: str) -> list[DirectConversation]:
        async with store_errors("listing conversations"):
            docs = await self._pairs.find({"members": user}).to_list(MAX_LISTED_DIRECT)
        return [DirectConversation(d["_id"], _peer(d["members"], user), d["started"]) for d in docs]


def _peer(members: list[str], user: str) -> str:
    others = [m for m in members if m != user]
    return others[0] if others else user  # one's notes to oneself
