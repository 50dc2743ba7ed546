"""Fair turns at a contested inbox: who lost a race to write it may write it next.

Writers of one inbox on several nodes need no lock for correctness: the unique inbox keys order them
(``seqs.py``). But a node that keeps writing an inbox keeps winning, and one that lost must look up the
heads before it tries again, so under sustained contention a loser could lose every round. So a node
that lost takes a short lease on the inboxes it could not write; every node waits (at most the lease's
lifetime) before writing an inbox another node holds. A lease is only a turn: if it is lost, expires or
cannot be read, writers race as before and the index still decides.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from typing import Protocol

from pymongo import UpdateOne
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from im.cluster.news import encode_contested
from im.cluster.redis_keys import RedisKeys
from im.lru import LruDict
from im.storage.store import Store, store_errors, utcnow

__all__ = ["LEASE_SECS", "InboxLeases", "LocalLeases", "NoLeases", "RedisLeases", "StoreLeases"]

log = logging.getLogger(__name__)

# How long a lease lasts: longer than one batch write, short enough that a lost one costs little.
LEASE_SECS = 0.1
# The store's collection of leases, used while Redis cannot be reached.
LEASES_COLLECTION = "leases"
# How often a writer looks again whether a lease it waits on was released.
LEASE_POLL_SECS = 0.002
# An inbox another node wrote, or lost a race for, this recently is checked for leases before a write;
# the others are written without asking (a lease is a turn, never needed for correctness).
CONTESTED_SECS = 1.0
# Inboxes whose last write elsewhere is remembered.
CONTESTED_INBOXES = 100_000


class InboxLeases(Protocol):
    async def wait_turn(self, users: Sequence[str]) -> None:
        """Return once no other node holds a lease on any of ``users`` (at most ``LEASE_SECS``)."""

    async def take(self, users: Sequence[str]) -> None:
        """Lease ``users`` to this node. The latest taker of an inbox has its turn: two nodes that lost
        races on overlapping inboxes then never wait on each other (one holds all it needs)."""

    async def release(self, users: Sequence[str]) -> None:
        """Give up this node's leases on ``users``."""

    def others_write(self, users: Iterable[str]) -> None:
        """Another node wrote ``users``' inboxes or lost a race for them: their turns matter for a while."""


class NoLeases:
    """The only writer never loses a race to another node."""

    async def wait_turn(self, users: Sequence[str]) -> None:
        pass

    async def take(self, users: Sequence[str]) -> None:
        pass

    async def release(self, users: Sequence[str]) -> None:
        pass

    def others_write(self, users: Iterable[str]) -> None:
        pass


async def _wait_while(held: Callable[[], Awaitable[bool]], *, until: float) -> None:
    # Polled: a lease lives in Redis (or another node), nothing here is told when it ends.
    while time.monotonic() < until and await held():  # noqa: ASYNC110
        await asyncio.sleep(LEASE_POLL_SECS)


class LocalLeases:
    """Leases shared by the writers of one process (several nodes' inboxes in one test)."""

    def __init__(self, table: dict[str, tuple[str, float]], node_id: str) -> None:
        self._table = table
        self._node_id = node_id

    async def _held_by_others(self, users: Sequence[str]) -> bool:
        now = time.monotonic()
        return any((lease := self._table.get(u)) is not None and lease[0] != self._node_id and lease[1] > now
                   for u in users)

    async def wait_turn(self, users: Sequence[str]) -> None:
        await _wait_while(functools.partial(self._held_by_others, users), until=time.monotonic() + LEASE_SECS)

    async def take(self, users: Sequence[str]) -> None:
        until = time.monotonic() + LEASE_SECS
        for user in users:
            self._table[user] = (self._node_id, until)

    async def release(self, users: Sequence[str]) -> None:
        for user in users:
            if (lease := self._table.get(user)) is not None and lease[0] == self._node_id:
                del self._table[user]

    def others_write(self, users: Iterable[str]) -> None:
        pass  # every inbox is checked: the table is in memory


class StoreLeases:
    """Leases as documents of the store's ``leases`` collection: slower than Redis, there when Redis is
    not (every node that cannot reach Redis takes its turns here instead)."""

    def __init__(self, store: Store, node_id: str) -> None:
        self._leases = store.db[LEASES_COLLECTION]
        self._node_id = node_id

    async def _held_by_others(self, users: Sequence[str]) -> bool:
        async with store_errors("reading inbox leases"):
            docs = await self._leases.find({"_id": {"$in": list(users)}, "node": {"$ne": self._node_id},
                                             "until": {"$gt": utcnow()}}, {"_id": 1}).to_list(1)
        return bool(docs)

    async def wait_turn(self, users: Sequence[str]) -> None:
        await _wait_while(functools.partial(self._held_by_others, users), until=time.monotonic() + LEASE_SECS)

    async def take(self, users: Sequence[str]) -> None:
        until = utcnow() + timedelta(seconds=LEASE_SECS)
        async with store_errors("taking inbox leases"):
            await self._leases.bulk_write(
                [UpdateOne({"_id": u}, {"$set": {"node": self._node_id, "until": until}}, upsert=True)
                 for u in users], ordered=False)

    async def release(self, users: Sequence[str]) -> None:
        async with store_errors("releasing inbox leases"):
            await self._leases.delete_many({"_id": {"$in": list(users)}, "node": self._node_id})

    def others_write(self, users: Iterable[str]) -> None:
        pass  # every inbox is checked: no bus tells this node which are contested while Redis is down


class RedisLeases:
    """Leases as Redis keys (``SET PX``), one per inbox, read in one pipelined round trip; while Redis
    cannot be reached, in the store (``fallback``).

    Only contested inboxes are read: those another node wrote or lost a race for in the last
    :data:`CONTESTED_SECS` (every node's heads come over the bus, and a node that takes a lease says
    so there). An inbox only this node writes then costs no Redis command per write.
    """

    def __init__(self, redis: Redis | RedisCluster, keys: RedisKeys, node_id: str,
                 fallback: InboxLeases | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._node_id = node_id
        self._fallback = fallback or NoLeases()
        self._failing = False
        self._contested: LruDict[str, float] = LruDict(CONTESTED_INBOXES)

    def others_write(self, users: Iterable[str]) -> None:
        now = time.monotonic()
        for user in users:
            self._contested.put(user, now)

    def _contested_of(self, users: Sequence[str]) -> list[str]:
        since = time.monotonic() - CONTESTED_SECS
        return [u for u in users if (at := self._contested.get(u)) is not None and at >= since]

    async def _held_by_others(self, users: Sequence[str]) -> bool:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user in users:
                    pipe.get(self._keys.lease(user))
                holders = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._note_failure(exc)
            return False
        self._failing = False
        mine = self._node_id.encode()
        return any(holder is not None and holder != mine for holder in holders)

    async def wait_turn(self, users: Sequence[str]) -> None:
        if self._failing:  # Redis could not be read: turns are taken in the store meanwhile
            await self._fallback.wait_turn(users)
            return
        contested = self._contested_of(users)
        if contested:
            await _wait_while(functools.partial(self._held_by_others, contested),
                              until=time.monotonic() + LEASE_SECS)

    async def take(self, users: Sequence[str]) -> None:
        if self._failing:
            await self._fallback.take(users)
            return
        self.others_write(users)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user in users:
                    pipe.set(self._keys.lease(user), self._node_id, px=int(LEASE_SECS * 1000))
                await pipe.execute()
            # The node that won the race may not have seen this node write these inboxes: tell it.
            await self._redis.publish(self._keys.heads_channel,
                                      encode_contested(users, node_id=self._node_id))
        except (RedisError, OSError) as exc:
            self._note_failure(exc)

    async def release(self, users: Sequence[str]) -> None:
        if self._failing:
            await self._fallback.release(users)
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user in users:
                    pipe.get(self._keys.lease(user))
                holders = await pipe.execute()
            mine = [u for u, h in zip(users, holders, strict=True) if h == self._node_id.encode()]
            if mine:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for user in mine:
                        pipe.delete(self._keys.lease(user))
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            self._note_failure(exc)

    def _note_failure(self, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning("inbox leases in Redis unavailable (%s); taken in the store until it answers", exc)
