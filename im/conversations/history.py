"""Conversation history: the archive (``messages``) paged newest first, unaffected by inbox trimming.

SecantusDB reads every match of a query before sorting and limiting (see docs/design.md), so "the 50
messages before X" is never asked as an open range. Pages are read in time windows bounded on
both sides (ObjectIds start with their creation time): a window that holds too few messages is
followed by an older, twice as wide one, until the page is full or the window passes the
conversation's start (when its data key was made) or :data:`HISTORY_FLOOR`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from im.conversations.crypto import KeyRing
from im.conversations.receipts import RECEIPT_KIND
from im.storage.store import store_errors, utcnow

__all__ = ["HistoryReader", "history_windows"]

# No message is older than this (the server did not exist before); ends the search of an empty past.
HISTORY_FLOOR = datetime(2020, 1, 1, tzinfo=UTC)
# The first window looks this far back; each empty-handed window doubles the next one.
FIRST_WINDOW_SECS = 600.0
# Clocks of several nodes differ a little: look this far past "now" for the newest page.
CLOCK_SKEW_SECS = 60.0


def history_windows(*, upper: datetime, floor: datetime, first_secs: float = FIRST_WINDOW_SECS
                    ) -> list[tuple[datetime, datetime]]:
    """Adjacent ``(lower, upper)`` windows from ``upper`` back to ``floor``, doubling in width."""
    windows = []
    width = timedelta(seconds=first_secs)
    while upper > floor:
        lower = max(floor, upper - width)
        windows.append((lower, upper))
        upper = lower
        width *= 2
    return windows


def _message(doc: dict[str, Any]) -> dict[str, Any]:
    return {"msg_id": str(doc["_id"]), "conv": doc["conv"], "from": doc["from"], "to": doc["to"],
            "kind": doc["kind"], "body": doc["body"], "client_msg_id": doc["cmid"],
            "ts": int(doc["ts"].timestamp() * 1000)}


class HistoryReader:
    def __init__(self, messages: AsyncCollection[dict[str, Any]], *, cipher: KeyRing | None) -> None:
        self._messages = messages
        self._cipher = cipher

    async def page(self, conv: str, *, before: ObjectId | None, limit: int,
                   now: Callable[[], datetime] = utcnow) -> dict[str, Any]:
        """Up to ``limit`` messages of ``conv`` older than ``before`` (newest first) and where to go on."""
        started: datetime = HISTORY_FLOOR
        if self._cipher is not None:
            created = await self._cipher.created_at(conv)
            if created is None:
                return {"messages": [], "next_before": None, "more": False}
            started = max(HISTORY_FLOOR, created - timedelta(seconds=CLOCK_SKEW_SECS))
        upper_id = before or ObjectId.from_datetime(now() + timedelta(seconds=CLOCK_SKEW_SECS))
        docs: list[dict[str, Any]] = []
        for lower, _ in history_windows(upper=upper_id.generation_time, floor=started):
            lower_id = ObjectId.from_datetime(lower)
            query = {"conv": conv, "_id": {"$gte": lower_id, "$lt": upper_id}, "kind": {"$ne": RECEIPT_KIND}}
            async with store_errors("reading history"):
                cursor = self._messages.find(query).sort("_id", DESCENDING)
                found = await cursor.to_list(limit + 1 - len(docs))
            docs.extend(found)
            upper_id = lower_id
            if len(docs) > limit:
                break
        more = len(docs) > limit
        docs = docs[:limit]
        messages = [_message(d) for d in docs]
        if self._cipher is not None:
            for message in messages:
                message["body"] = await self._cipher.open(conv, message["body"])
        next_before = messages[-1]["msg_id"] if messages else None
        return {"messages": messages, "next_before": next_before, "more": more}

