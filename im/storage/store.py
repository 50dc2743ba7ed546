"""MongoDB access through PyMongo's ``AsyncMongoClient`` (the successor of Motor).

This module owns the client, the collections, their indexes and the schema steps, and translates
driver errors into domain errors at the boundary. Query logic lives with its use: inboxes in
``im/delivery/``, users in ``im/accounts/users.py``, conversations in ``im/conversations/``.

Two rules for every query, because the embedded store (SecantusDB) needs them and a real ``mongod`` does
not mind: connect with ``retryWrites=false`` (idempotency is ours, by client_msg_id), and bound every
range query on both sides (SecantusDB reads every match before sorting and limiting).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pymongo
from pymongo import ASCENDING, AsyncMongoClient, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from im.errors import StoreUnavailable

__all__ = [
    "INBOX_KEY_FIELD", "META_COLLECTION", "Store", "dedup_key", "inbox_key", "inbox_key_conflict",
    "inbox_range", "is_duplicate_key_only", "new_epoch", "store_errors", "utcnow",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# The collection of the database's own bookkeeping: its schema version, whether inbox heads were saved.
META_COLLECTION = "meta"
# Version of the data layout; ``Store._migrate`` brings older databases up to it.
SCHEMA_VERSION = 4
# Archived messages updated per bulk write when a migration gives them a new field.
MIGRATION_BATCH = 500


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
            # Without it the driver keeps every connection a burst opened (up to maxPoolSize) for good,
            # and a mongod holds a thread for each. A maxIdleTimeMS in the URL wins.
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
        # Inbox floors (trimmed seq per user), apart from the counters: see ``im/delivery/reader.py``.
        self.trims = self.db["trims"]

    async def ensure_indexes(self) -> None:
        """Create the indexes the queries and invariants rely on (idempotent)."""
        async with store_errors("creating indexes"):
            await self._migrate()
            # The inboxes: unique, so a seq once given is never given again (see im/delivery/archive.py).
            await self.messages.create_index(
                [(INBOX_KEY_FIELD, ASCENDING)], unique=True, name="inbox_key_unique")
            # Idempotent sends: a retry with the same client_msg_id finds the original. One field for
            # (from, client_msg_id): SecantusDB serves a single-field $in from the index, but scans the
            # collection for an $or of compound keys.
            await self.messages.create_index([("dk", ASCENDING)], unique=True, name="dedup_key_unique")
            await self.messages.create_index([("conv", ASCENDING), ("_id", ASCENDING)])
            await self.cursors.create_index([("user", ASCENDING)])

    async def _migrate(self) -> None:
        """Bring a database written by an older version up to ``SCHEMA_VERSION``, one step at a time.

        Version 1 kept inbox entries in an ``inbox`` collection of their own; version 2 keeps them as
        keys in the archive, which already had each message's recipients and seqs (``rcpt``); version
        3 drops the ``inbox`` collection, which nothing reads since version 2, and the ``heads`` flag of
        the meta collection (every node now reads heads past the counters); version 4 lists every
        one-to-one pair in ``conversations`` (written on a pair's first message since).
        """
        meta = self.db[META_COLLECTION]
        doc = await meta.find_one({"_id": "schema"})
        version = 0 if doc is None else doc["version"]
        if version >= SCHEMA_VERSION:
            return
        if version < 2:
            await self._give_inbox_keys()
        if version < 3:
            await self.db.drop_collection("inbox")
            await meta.delete_one({"_id": "heads"})
        if version < 4:
            await self._list_direct_pairs()
        await meta.update_one({"_id": "schema"}, {"$set": {"version": SCHEMA_VERSION}}, upsert=True)

    async def _give_inbox_keys(self) -> None:
        """Schema 2: every archived message gets the inbox keys of its recipients."""
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
            log.info("schema 2: gave %d archived messages their inbox keys", done)

    async def _list_direct_pairs(self) -> None:
        """Schema 4: one ``conversations`` document per one-to-one pair of the archive, started at its
        first message (one pass over the archive, as in schema 2)."""
        started: dict[str, datetime] = {}
        async for message in self.messages.find({}, {"conv": 1}):
            conv = message.get("conv", "")
            if conv.startswith("d:"):
                first = message["_id"].generation_time
                started[conv] = min(started.get(conv, first), first)
        ops = [UpdateOne({"_id": conv}, {"$setOnInsert": {"members": sorted(set(conv.split(":")[1:])),
                                                          "started": at}}, upsert=True)
               for conv, at in started.items()]
        for start in range(0, len(ops), MIGRATION_BATCH):
            await self.db["conversations"].bulk_write(ops[start:start + MIGRATION_BATCH], ordered=False)
        if ops:
            log.info("schema 4: listed %d one-to-one conversations", len(ops))

    async def transaction(self, what: str, write: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        """Run ``write`` in one transaction with the store's write concern, bounded in time.

        ``with_transaction`` retries transient errors for up to 120 s on its own; the bound makes an
        outage reach the caller promptly as "unavailable". Callers write only what is safe to retry
        (sends are idempotent by client_msg_id, cursors and floors only move forward).
        """
        async with store_errors(what), self.client.start_session() as session:
            with pymongo.timeout(self.timeout_secs):
                return await session.with_transaction(
                    write, read_concern=ReadConcern("local"), write_concern=self.write_concern
                )

    async def ping(self) -> None:
        async with store_errors("ping"):
            await self.client.admin.command("ping")

    async def close(self) -> None:
        await self.client.close()
