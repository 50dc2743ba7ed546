"""User documents: password hashes, token versions, and which user ids exist."""

from __future__ import annotations

from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from im.delivery.counters import ensure_counters
from im.errors import ConflictError
from im.lru import LruDict
from im.storage.store import Store, store_errors, utcnow

__all__ = ["UserStore"]

# Positive "user exists" answers kept in memory; users are never deleted, so a hit cannot go stale.
KNOWN_USERS_CACHE_SIZE = 100_000


class UserStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._users: AsyncCollection[dict[str, Any]] = store.users
        self._known: LruDict[str, bool] = LruDict(KNOWN_USERS_CACHE_SIZE)

    async def create(self, user: str, password_hash: str) -> None:
        """Insert a user and its inbox counter; :class:`ConflictError` if the id is taken."""
        async with store_errors("registering a user"):
            try:
                await self._users.insert_one({"_id": user, "password_hash": password_hash,
                                              "created_at": utcnow()})
            except DuplicateKeyError:
                raise ConflictError(f"user id {user!r} is already taken", code="user_exists",
                                    field="user") from None
        # Idempotent, so a half-finished earlier attempt is completed.
        await ensure_counters(self._store, [user])
        self._known.put(user, True)

    async def credentials(self, user: str) -> tuple[str, int] | None:
        """``(password_hash, token_version)`` of ``user``, or None when there is no such user."""
        async with store_errors("reading a user"):
            doc = await self._users.find_one({"_id": user}, {"password_hash": 1, "token_version": 1})
        return None if doc is None else (doc["password_hash"], doc.get("token_version", 0))

    async def token_version(self, user: str) -> int | None:
        async with store_errors("reading a user"):
            doc = await self._users.find_one({"_id": user}, {"token_version": 1})
        return None if doc is None else doc.get("token_version", 0)

    async def bump_token_version(self, user: str) -> int:
        """Invalidate every token issued to ``user`` so far; returns the new version."""
        async with store_errors("revoking tokens"):
            doc = await self._users.find_one_and_update(
                {"_id": user}, {"$inc": {"token_version": 1}}, projection={"token_version": 1},
                return_document=ReturnDocument.AFTER,
            )
        return 0 if doc is None else doc["token_version"]

    def known(self, user: str) -> bool:
        """Whether ``user`` is known to exist without asking the store (users are never deleted, so a
        user seen once stays valid); False means "ask": :meth:`exists`."""
        return self._known.touch(user) is not None

    async def exists(self, user: str) -> bool:
        if self.known(user):
            return True
        async with store_errors("reading a user"):
            found = await self._users.find_one({"_id": user}, {"_id": 1}) is not None
        if found:
            self._known.put(user, True)
        return found
