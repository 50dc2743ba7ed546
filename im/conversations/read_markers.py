"""Read markers: per user and conversation, the newest message the user has reported read.

A read receipt tells the sender which messages were read; a marker tells the reader's other devices
(and a fresh one) where it stopped, and a one-to-one peer which of its messages were read. Message ids
start with their creation time, so "read up to this id" orders like the conversation itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from im.conversations.receipts import Touched
from im.storage.store import store_errors

__all__ = ["ReadMarkers", "marker_id"]


def marker_id(user: str, conv: str) -> str:
    # User ids never contain '|' (see im/protocol.py), so the pair cannot be confused with another.
    return f"{user}|{conv}"


class ReadMarkers:
    def __init__(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        self._markers = collection

    async def advance(self, reader: str, touched: Sequence[Touched]) -> None:
        """Move ``reader``'s markers forward to the newest of ``touched`` per conversation (never back)."""
        newest: dict[str, ObjectId] = {}
        for t in touched:
            msg_id = ObjectId(t.msg_id)
            newest[t.conv] = max(newest.get(t.conv, msg_id), msg_id)
        if not newest:
            return
        ops = [UpdateOne({"_id": marker_id(reader, conv)}, {"$max": {"at": msg_id}}, upsert=True)
               for conv, msg_id in newest.items()]
        async with store_errors("recording read markers"):
            await self._markers.bulk_write(ops, ordered=False)

    async def of(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], ObjectId]:
        """The markers of ``(user, conv)`` pairs that have one."""
        by_id = {marker_id(user, conv): (user, conv) for user, conv in pairs}
        if not by_id:
            return {}
        async with store_errors("reading read markers"):
            docs = await self._markers.find({"_id": {"$in": list(by_id)}}).to_list(None)
        return {by_id[d["_id"]]: d["at"] for d in docs}
