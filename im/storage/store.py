"""MongoDB access through PyMongo's ``AsyncMongoClient`` (the successor of Motor).

This module owns the client, the collections and their indexes, and translates driver errors into
domain errors at the boundary. Query logic lives with its use: inboxes in ``im/delivery/``.

SecantusDB notes (see shared DESIGN.md section 7): connect with ``retryWrites=false``, and bound every
range query on both sides, because it reads all matches before applying sort and limit.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.write_concern import WriteConcern

from im.errors import ConflictError, StoreUnavailable

__all__ = [
    "INBOX_KEY_FIELD", "META_COLLECTION", "Store", "dedup_key", "inbox_key", "inbox_key_conflict",
    "inbox_range", "is_duplicate_key_only", "new_epoch", "store_errors", "utcnow",
]

log = logging.getLogger(__name__)

# The collection of the database's own bookkeeping: its schema version, whether inbox heads were saved.
META_COLLECTION = "meta"
# Version of the data layout; ``Store._migrate`` brings older databases up to it.
SCHEMA_VERSION = 2
# Archived messages updated per bulk write when a migration gives them a new field.
MIGRATION_BATCH = 500
# Positive "user exists" answers kept in memory; users are never deleted, so a hit cannot go stale.
KNOWN_USERS_CACHE_SIZE = 100_000


def is_duplicate_key_only(exc: BulkWriteError) -> bool:
    """True when every error of a failed batch is a unique-index violation (code 11000)."""
    errors = exc.details.get("writeErrors", [])
    return bool(errors) and all(e.get("code") == 11000 for e in errors)


# The archive field holding a message's inbox keys, one per recipient (see ``inbox_key``).
INBOX_KEY_FIELD = "ix"
# Fixed width, so that one user's keys sort by seq (10**12 seqs is more than an inbox will ever see).
SEQ_DIGITS = 12


def inbox_key(user: str, seq: int) -> str:
    """The key of entry ``seq`` of ``user``'s inbox in the archive's unique inbox index.

    User ids never contain '/', so one user's keys form one contiguous range of the index, in seq order.
    """
    return f"{user}/{seq:0{SEQ_DIGITS}d}"


def inbox_range(user: str, after: int, upto: int) -> dict[str, Any]:
    """The query for ``user``'s inbox entries with seq in (after, upto]: bounded on both sides."""
    return {INBOX_KEY_FIELD: {"$gt": inbox_key(user, after), "$lte": inbox_key(user, upto)}}


def inbox_key_conflict(exc: BulkWriteError) -> bool:
    """True when a failed insert gave a seq that an inbox already holds (a wrong idea of its head)."""
    return any(e.get("code") == 11000 and INBOX_KEY_FIELD in (e.get("keyPattern") or {})
               for e in exc.details.get("writeErrors", []))


def dedup_key(sender: str, client_msg_id: str) -> str:
    """The archive's unique idempotency key; user ids never contain '/', so it splits unambiguously."""
    return f"{sender}/{client_msg_id}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_epoch() -> str:
    """A fresh random inbox epoch: a client that sees it change knows its seq cursor is meaningless."""
    return secrets.token_hex(6)


@contextlib.asynccontextmanager
async def store_errors(action: str) -> AsyncIterator[None]:
    """Translate driver failures into :class:`StoreUnavailable` (clients may retry) at the boundary."""
    try:
        yield
    except DuplicateKeyError:
        raise
    except BulkWriteError as exc:
        # A unique-index violation in a batch is the caller's to handle (a racing retry); anything else
        # in a batch is a store failure like any other.
        if is_duplicate_key_only(exc):
            raise
        log.error("store refused a batch during %s: %s", action, exc.details)
        raise StoreUnavailable(f"the message store refused the operation ({action}); retry later") from None
    except (ConnectionFailure, ServerSelectionTimeoutError) as exc:
        log.warning("store unreachable during %s: %s", action, exc)
        raise StoreUnavailable(f"the message store is unavailable ({action}); retry later") from None
    except OperationFailure as exc:
        log.error("store refused %s: %s", action, exc)
        raise StoreUnavailable(f"the message store refused the operation ({action}); retry later") from None
    except PyMongoError as exc:
        log.error("store error during %s: %s", action, exc)
        raise StoreUnavailable(f"the message store failed ({action}); retry later") from None


class Store:
    """The database handle, its collections and the user accounts."""

    def __init__(
        self, url: str, db_name: str, *, write_concern: str = "majority", journal: bool = True,
        timeout_secs: float = 10.0, max_idle_secs: float = 0.0,
    ) -> None:
        self.timeout_secs = timeout_secs
        timeout_ms = int(timeout_secs * 1000)
        pool: dict[str, Any] = {}
        if max_idle_secs > 0 and "maxidletimems=" not in url.lower():
            # The driver keeps every connection a burst opened (up to maxPoolSize, 100) for good: after
            # 10,000 clients logged in at once the node held ~100 idle sockets, and a mongod a thread and
            # ~1 MB for each. A maxIdleTimeMS in the URL wins.
            pool["maxIdleTimeMS"] = int(max_idle_secs * 1000)
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url,
            tz_aware=True,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
            appname="im-server",
            **pool,
        )
        w: str | int = write_concern if write_concern == "majority" else int(write_concern)
        self.write_concern = WriteConcern(w=w, j=journal)
        self.db: AsyncDatabase[dict[str, Any]] = self.client.get_database(
            db_name, write_concern=self.write_concern
        )
        self.users = self.db["users"]
        self.counters = self.db["counters"]
        # The archive: every message once, with its inbox keys (the inboxes are an index over it).
        self.messages = self.db["messages"]
        self.cursors = self.db["cursors"]
        # Inbox floors (trimmed seq per user), apart from the counters: see InboxStore._trimmed.
        self.trims = self.db["trims"]
        self._known_users: OrderedDict[str, None] = OrderedDict()

    async def ensure_indexes(self) -> None:
        """Create the indexes the queries and invariants rely on (idempotent)."""
        async with store_errors("creating indexes"):
            await self._migrate()
            # The inboxes: unique, so a seq once given is never given again (see im/delivery/inbox.py).
            await self.messages.create_index(
                [(INBOX_KEY_FIELD, ASCENDING)], unique=True, name="inbox_key_unique")
            # Idempotent sends: a retry with the same client_msg_id finds the original. The key is
            # (from, client_msg_id) encoded in one field: SecantusDB serves a single-field $in from the
            # index (7 ms for 10 keys on a 20k archive) but scans the collection for an $or of
            # compound keys (~700 ms for one key).
            await self.messages.create_index([("dk", ASCENDING)], unique=True, name="dedup_key_unique")
            await self.messages.create_index([("conv", ASCENDING), ("_id", ASCENDING)])
            await self.cursors.create_index([("user", ASCENDING)])

    async def _migrate(self) -> None:
        """Bring a database written by an older version up to ``SCHEMA_VERSION``.

        Version 1 kept inbox entries in a collection of their own; version 2 keeps them as keys in the
        archive, which already had each message's recipients and seqs (``rcpt``). The old ``inbox``
        collection is left as it was (an older version can still run on it) and no longer read.
        """
        meta = self.db[META_COLLECTION]
        doc = await meta.find_one({"_id": "schema"})
        if doc is not None and doc["version"] >= SCHEMA_VERSION:
            return
        done = 0
        batch: list[UpdateOne] = []
        # One pass over the archive (a fresh database has none): a range query per page would make
        # SecantusDB read the rest of the collection for every page.
        async for message in self.messages.find({}, {"rcpt": 1, INBOX_KEY_FIELD: 1}):
            if INBOX_KEY_FIELD in message:
                continue
            keys = [inbox_key(r["u"], r["s"]) for r in message.get("rcpt", [])]
            batch.append(UpdateOne({"_id": message["_id"]}, {"$set": {INBOX_KEY_FIELD: keys}}))
            if len(batch) >= MIGRATION_BATCH:
                await self.messages.bulk_write(batch, ordered=False)
                done += len(batch)
                batch = []
        if batch:
            await self.messages.bulk_write(batch, ordered=False)
            done += len(batch)
        if done:
            log.info("schema %d: gave %d archived messages their inbox keys", SCHEMA_VERSION, done)
        await meta.update_one({"_id": "schema"}, {"$set": {"version": SCHEMA_VERSION}}, upsert=True)

    async def ping(self) -> None:
        async with store_errors("ping"):
            await self.client.admin.command("ping")

    async def close(self) -> None:
        await self.client.close()

    # -- users ----------------------------------------------------------------------------------------

    async def create_user(self, user: str, password_hash: str) -> None:
        """Insert a user and its inbox counter; :class:`ConflictError` if the id is taken."""
        now = utcnow()
        async with store_errors("registering a user"):
            try:
                await self.users.insert_one({"_id": user, "password_hash": password_hash, "created_at": now})
            except DuplicateKeyError:
                raise ConflictError(f"user id {user!r} is already taken", code="user_exists",
                                    field="user") from None
            # The counter carries the inbox epoch; upsert so a half-finished earlier attempt is completed.
            await self.counters.update_one(
                {"_id": user},
                {"$setOnInsert": {"seq": 0, "epoch": new_epoch()}},
                upsert=True,
            )
        self._remember(user)

    async def credentials(self, user: str) -> tuple[str, int] | None:
        """``(password_hash, token_version)`` of ``user``, or None when there is no such user."""
        async with store_errors("reading a user"):
            doc = await self.users.find_one({"_id": user}, {"password_hash": 1, "token_version": 1})
        return None if doc is None else (doc["password_hash"], doc.get("token_version", 0))

    async def token_version(self, user: str) -> int | None:
        async with store_errors("reading a user"):
            doc = await self.users.find_one({"_id": user}, {"token_version": 1})
        return None if doc is None else doc.get("token_version", 0)

    async def bump_token_version(self, user: str) -> int:
        """Invalidate every token issued to ``user`` so far; returns the new version."""
        async with store_errors("revoking tokens"):
            doc = await self.users.find_one_and_update(
                {"_id": user}, {"$inc": {"token_version": 1}}, projection={"token_version": 1},
                return_document=ReturnDocument.AFTER,
            )
        return 0 if doc is None else doc["token_version"]

    def user_known(self, user: str) -> bool:
        """Whether ``user`` is known to exist without asking the store (users are never deleted, so a
        user seen once stays valid); False means "ask": :meth:`user_exists`."""
        if user in self._known_users:
            self._known_users.move_to_end(user)
            return True
        return False

    async def user_exists(self, user: str) -> bool:
        if self.user_known(user):
            return True
        async with store_errors("reading a user"):
            found = await self.users.find_one({"_id": user}, {"_id": 1}) is not None
        if found:
            self._remember(user)
        return found

    def _remember(self, user: str) -> None:
        self._known_users[user] = None
        if len(self._known_users) > KNOWN_USERS_CACHE_SIZE:
            self._known_users.popitem(last=False)
