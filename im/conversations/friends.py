"""Friendships (relations): request, accept, decline, remove, list.

One document per pair, whatever the direction: ``_id`` is ``"<a>:<b>"`` with ``a < b`` (user ids have
no ``:``), so a pair can never hold two contradicting relations and a race between two requests ends
in one document. ``status`` is ``pending`` (with ``requested_by``) or ``accepted``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from im.errors import InvalidInput, NotFoundError
from im.storage.store import store_errors, utcnow

__all__ = ["DIRECT_POLICIES", "FriendStore", "Relation", "relation_id"]

# Who may message whom one-to-one (setting ``direct_policy``).
DIRECT_POLICIES = ("anyone", "friends")
PENDING = "pending"
ACCEPTED = "accepted"
# Most relations one list call returns (friends plus requests both ways).
MAX_LISTED_RELATIONS = 5000


def relation_id(a: str, b: str) -> str:
    first, second = sorted((a, b))
    return f"{first}:{second}"


@dataclass(frozen=True, slots=True)
class Relation:
    """A relation seen from ``user``: ``state`` is friends, incoming (to accept) or outgoing."""

    user: str
    state: str
    since: int

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "state": self.state, "since": self.since}


def _view(doc: dict[str, Any], me: str) -> Relation:
    other = doc["b"] if doc["a"] == me else doc["a"]
    if doc["status"] == ACCEPTED:
        state = "friends"
    else:
        state = "outgoing" if doc["requested_by"] == me else "incoming"
    return Relation(user=other, state=state, since=int(doc["since"].timestamp() * 1000))


class FriendStore:
    def __init__(self, relations: AsyncCollection[dict[str, Any]]) -> None:
        self._relations = relations

    async def ensure_indexes(self) -> None:
        async with store_errors("creating relation indexes"):
            await self._relations.create_index([("a", ASCENDING)])
            await self._relations.create_index([("b", ASCENDING)])

    async def _get(self, me: str, other: str) -> dict[str, Any] | None:
        async with store_errors("reading a relation"):
            return await self._relations.find_one({"_id": relation_id(me, other)})

    async def request(self, me: str, other: str) -> Relation:
        """Ask ``other`` to be friends; a request crossing one from ``other`` makes them friends at once.

        Idempotent: asking again, or asking an existing friend, changes nothing.
        """
        if me == other:
            raise InvalidInput("you cannot befriend yourself", field="user")
        doc = await self._get(me, other)
        if doc is None:
            first, second = sorted((me, other))
            doc = {"_id": relation_id(me, other), "a": first, "b": second, "status": PENDING,
                   "requested_by": me, "since": utcnow()}
            async with store_errors("storing a friend request"):
                try:
                    await self._relations.insert_one(doc)
                except DuplicateKeyError:  # the other side asked at the same moment
                    return await self.request(me, other)
            return _view(doc, me)
        if doc["status"] == PENDING and doc["requested_by"] == other:
            return await self.accept(me, other)
        return _view(doc, me)

    async def accept(self, me: str, other: str) -> Relation:
        """Accept ``other``'s pending request; accepting an existing friendship is a no-op."""
        rid = relation_id(me, other)
        async with store_errors("accepting a friend request"):
            result = await self._relations.update_one(
                {"_id": rid, "status": PENDING, "requested_by": other},
                {"$set": {"status": ACCEPTED, "since": utcnow()}, "$unset": {"requested_by": ""}},
            )
        doc = await self._get(me, other)
        if doc is None or (result.matched_count == 0 and doc["status"] != ACCEPTED):
            raise NotFoundError(f"no friend request from {other!r}", code="no_request", field="user")
        return _view(doc, me)

    async def decline(self, me: str, other: str) -> None:
        """Refuse ``other``'s pending request (``other`` is not told; it may ask again later)."""
        async with store_errors("declining a friend request"):
            result = await self._relations.delete_one(
                {"_id": relation_id(me, other), "status": PENDING, "requested_by": other}
            )
        if result.deleted_count == 0:
            raise NotFoundError(f"no friend request from {other!r}", code="no_request", field="user")

    async def remove(self, me: str, other: str) -> None:
        """End a friendship, or withdraw a request either way."""
        async with store_errors("removing a friend"):
            result = await self._relations.delete_one({"_id": relation_id(me, other)})
        if result.deleted_count == 0:
            raise NotFoundError(f"{other!r} is not a friend and no request is pending", code="not_friends",
                                field="user")

    async def are_friends(self, a: str, b: str) -> bool:
        if a == b:
            return True
        doc = await self._get(a, b)
        return doc is not None and doc["status"] == ACCEPTED

    async def list(self, me: str) -> list[Relation]:
        """Friends and pending requests of ``me``, by user id."""
        async with store_errors("listing friends"):
            docs = [
                doc
                for side in ("a", "b")
                for doc in await self._relations.find({side: me}).to_list(MAX_LISTED_RELATIONS)
            ]
        return sorted((_view(doc, me) for doc in docs), key=lambda r: r.user)
