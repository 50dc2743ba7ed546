"""A user's conversations, newest activity first: each with its last message, unread count and read marks.

What a fresh device needs to draw its conversation list in one screen load. Nothing here is kept per
message: the list is the user's groups and one-to-one pairs, the last message of each is the newest
page of its history, and unread counts are counted from the user's read marker, in time windows
newest first and only up to :data:`MAX_UNREAD` (a client shows "99+"), so a long unread past costs no
more than a short one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.asynchronous.collection import AsyncCollection

from im.conversations.directory import Directory
from im.conversations.groups import Group, GroupStore
from im.conversations.history import CLOCK_SKEW_SECS, HISTORY_FLOOR, HistoryReader, history_windows
from im.conversations.read_markers import ReadMarkers
from im.conversations.receipts import RECEIPT_KIND
from im.errors import InvalidInput
from im.storage.store import store_errors

__all__ = ["MAX_UNREAD", "ConversationList"]

# Unread messages counted per conversation; beyond it the answer says "more".
MAX_UNREAD = 100
# Store reads one listing runs at once, so a user with many conversations cannot monopolise the pool.
READS_AT_ONCE = 16

T = TypeVar("T")


@dataclass(slots=True)
class _Entry:
    conv: str
    started: datetime
    group: Group | None = None
    peer: str | None = None
    last: dict[str, Any] | None = None

    @property
    def activity(self) -> tuple[str, str]:
        """Sort key: the last message's id (ids start with their time), else the conversation's start."""
        newest = self.last["msg_id"] if self.last else str(ObjectId.from_datetime(self.started))
        return newest, self.conv


def _cursor(entry: _Entry) -> str:
    newest, conv = entry.activity
    return f"{newest}.{conv}"


def _parse_cursor(value: str) -> tuple[str, str]:
    newest, _, conv = value.partition(".")
    try:
        ObjectId(newest)
    except (InvalidId, TypeError):
        raise InvalidInput("before is not a cursor of this listing", field="before") from None
    return newest, conv


class ConversationList:
    def __init__(self, groups: GroupStore, directory: Directory, markers: ReadMarkers,
                 history: HistoryReader, messages: AsyncCollection[dict[str, Any]]) -> None:
        self._groups = groups
        self._directory = directory
        self._markers = markers
        self._history = history
        self._messages = messages
        self._reads = asyncio.Semaphore(READS_AT_ONCE)

    async def page(self, user: str, *, before: str | None, limit: int) -> dict[str, Any]:
        """Up to ``limit`` conversations of ``user`` older (by activity) than ``before``, newest first."""
        after_key = _parse_cursor(before) if before else None
        groups, directs = await asyncio.gather(self._groups.of_user(user), self._directory.of_user(user))
        entries = [_Entry(g.conv, g.created_at or HISTORY_FLOOR, group=g) for g in groups]
        entries += [_Entry(d.conv, d.started, peer=d.peer) for d in directs]
        pages = await asyncio.gather(*(self._bounded(self._history.page(e.conv, before=None, limit=1))
                                       for e in entries))
        for entry, found in zip(entries, pages, strict=True):
            entry.last = found["messages"][0] if found["messages"] else None
        # A pair registered for a message that was then refused has nothing to show.
        entries = [e for e in entries if e.group is not None or e.last is not None]
        entries.sort(key=lambda e: e.activity, reverse=True)
        if after_key is not None:
            entries = [e for e in entries if e.activity < after_key]
        shown, more = entries[:limit], len(entries) > limit
        markers = await self._markers.of(
            [(user, e.conv) for e in shown] + [(e.peer, e.conv) for e in shown if e.peer is not None])
        unread = await asyncio.gather(*(self._bounded(self._unread(user, e, markers.get((user, e.conv))))
                                        for e in shown))
        listed = []
        for entry, count in zip(shown, unread, strict=True):
            mine = markers.get((user, entry.conv))
            peers = markers.get((entry.peer, entry.conv)) if entry.peer is not None else None
            group = entry.group
            listed.append({
                "conv": entry.conv,
                "kind": "group" if entry.group is not None else "direct",
                "peer": entry.peer,
                "group": {"id": group.id, "name": group.name} if group is not None else None,
                "last_message": entry.last,
                "unread": min(count, MAX_UNREAD),
                "unread_more": count > MAX_UNREAD,
                "last_read": str(mine) if mine is not None else None,
                "peer_read": str(peers) if peers is not None else None,
            })
        return {"conversations": listed, "next_before": _cursor(shown[-1]) if more else None, "more": more}

    async def _bounded(self, read: Awaitable[T]) -> T:
        async with self._reads:
            return await read

    async def _unread(self, user: str, entry: _Entry, marker: ObjectId | None) -> int:
        """Messages of others after ``marker`` up to the last one, counted up to one past the cap."""
        last = entry.last
        if last is None or last["from"] == user:
            return 0  # one's own last message: one has seen everything before it
        if marker is not None and ObjectId(last["msg_id"]) <= marker:
            return 0
        floor = marker.generation_time if marker is not None else max(
            HISTORY_FLOOR, entry.started - timedelta(seconds=CLOCK_SKEW_SECS))
        upper = ObjectId(last["msg_id"])
        counted = 0
        windows = history_windows(upper=upper.generation_time + timedelta(seconds=1), floor=floor)
        for lower_time, _ in windows:
            lower = ObjectId.from_datetime(lower_time)
            if marker is not None:
                lower = max(marker, lower)
            query = {"conv": entry.conv, "_id": {"$gt": lower, "$lte": upper}, "from": {"$ne": user},
                     "kind": {"$ne": RECEIPT_KIND}}
            async with store_errors("counting unread messages"):
                counted += await self._messages.count_documents(query, limit=MAX_UNREAD + 1 - counted)
            if counted > MAX_UNREAD:
                break
            upper = lower
        return counted
