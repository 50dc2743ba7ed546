"""User documents: password hashes, token versions, and which user ids exist."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from im.delivery.counters import ensure_counters
from im.errors import ConflictError
from im.lru import LruDict
from im.storage.store import Store, store_errors, utcnow

__all__ = ["Credentials", "TokenVersions", "UserStore", "device_key"]

_VERSION_FIELDS = {"token_version": 1, "device_versions": 1}
# Positive "user exists" answers kept in memory; users are never deleted, so a hit cannot go stale.
KNOWN_USERS_CACHE_SIZE = 100_000


def device_key(device: str) -> str:
    """The field name a device's token version is kept under: device names are free text, and a
    field name must not contain '.' or start with '$'."""
    return hashlib.sha256(device.encode("utf-8")).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class TokenVersions:
    """A user's token version and the versions of the devices that signed out (absent: 0)."""

    user: int
    devices: dict[str, int]

    def of_device(self, device: str) -> int:
        return self.devices.get(device_key(device), 0)


@dataclass(frozen=True, slots=True)
class Credentials:
    password_hash: str
    versions: TokenVersions


def _versions(doc: dict[str, Any]) -> TokenVersions:
    return TokenVersions(doc.get("token_version", 0), dict(doc.get("device_versions") or {}))


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

    async def credentials(self, user: str) -> Credentials | None:
        """The password hash and token versions of ``user``, or None when there is no such user."""
        async with store_errors("reading a user"):
            doc = await self._users.find_one({"_id": user}, {"password_hash": 1, **_VERSION_FIELDS})
        return None if doc is None else Credentials(doc["password_hash"], _versions(doc))

    async def token_versions(self, user: str) -> TokenVersions | None:
        async with store_errors("reading a user"):
            doc = await self._users.find_one({"_id": user}, _VERSION_FIELDS)
        return None if doc is None else _versions(doc)

    async def revoke_tokens(self, user: str, device: str | None = None) -> TokenVersions:
        """Invalidate every token issued so far to ``user`` (``device`` None) or to one of its devices;
        returns the new versions."""
        field = "token_version" if device is None else f"device_versions.{device_key(device)}"
        async with store_errors("revoking tokens"):
            doc = await self._users.find_one_and_update(
                {"_id": user}, {"$inc": {field: 1}}, projection=_VERSION_FIELDS,
                return_document=ReturnDocument.AFTER,
            )
        return _versions(doc or {})

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
