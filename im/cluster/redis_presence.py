"""Cluster presence in Redis.

Each node registers itself (``node:{id}``, a JSON record with a TTL refreshed by a heartbeat) and
records its users in ``presence:{user}`` (a hash ``node -> "boot:count"`` whose TTL the heartbeat
refreshes) and in ``node:{id}:users`` (a sorted set, for paged listing). When a node dies its record
and user set expire after ``presence_ttl_secs``; fields it left in hashes that other nodes keep alive
are ignored by readers, because the field's boot id no longer matches a live node record.

All Redis writes of a node go through one writer task, so they never overtake each other: connects
and disconnects only mark a user "dirty" and wake the writer, which sends the user's *current* count.
A user's first connection on a node waits for that write (bounded), so a message stored after the
client heard "connected" is always routed to this node. A user whose last connection closed lingers
for ``linger_secs`` (a long-poll is between two requests most of the time it is "disconnected"), which
also saves two Redis writes per poll.

Caveat: ``connections`` in a cluster lookup is the count as of the node's last write; during the
linger it still shows the last non-zero count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from im.cluster.presence import OnlinePage, PresenceInfo, linger_over
from im.cluster.redis_keys import RedisKeys
from im.delivery.hub import ConnectionTable
from im.errors import StoreUnavailable

__all__ = [
    "RedisPresence",
    "beat_due",
    "decode_entry",
    "encode_entry",
    "live_connections",
    "merge_pages",
    "next_wakeup_secs",
]

log = logging.getLogger(__name__)

# A first connection waits at most this long for its presence write; past it the connection is served
# anyway (notifies may be late, never lost: the client pulled after connecting).
CONNECT_WAIT_SECS = 2.0
# After a failed Redis write, try again this soon (the outage is logged once, not per attempt).
RETRY_SECS = 1.0
# Users refreshed per pipeline round trip in a full heartbeat (bounds one pipeline's memory).
REFRESH_CHUNK_USERS = 1000


# -- pure timing and decision logic (no I/O, explicit ``now``) -----------------------------------------


def beat_due(*, now: float, last_beat_at: float | None, heartbeat_secs: float) -> bool:
    """A full heartbeat (registration + every user's TTL) is due."""
    return last_beat_at is None or now - last_beat_at >= heartbeat_secs


def next_wakeup_secs(
    *, now: float, last_beat_at: float | None, heartbeat_secs: float, failing: bool,
    linger_deadlines: Iterable[float] = (), retry_secs: float = RETRY_SECS,
) -> float:
    """How long the writer may sleep: until the next beat, the first linger expiry or a retry."""
    if last_beat_at is None:
        return 0.0
    wake_at = last_beat_at + heartbeat_secs
    for deadline in linger_deadlines:
        wake_at = min(wake_at, deadline)
    delay = max(0.0, wake_at - now)
    return min(delay, retry_secs) if failing else delay


def encode_entry(boot: str, count: int) -> str:
    return f"{boot}:{count}"


def decode_entry(value: str) -> tuple[str, int] | None:
    boot, _, count = value.rpartition(":")
    if not boot or not count.isdigit():
        return None
    return boot, int(count)


def live_connections(fields: Mapping[str, str], node_boots: Mapping[str, str | None]) -> dict[str, int]:
    """The ``node -> count`` entries of a presence hash whose node is alive in the same boot.

    A field whose node record expired (node died) or carries another boot id (node restarted under the
    same id and no longer holds those connections) is stale and ignored.
    """
    live: dict[str, int] = {}
    for node, value in fields.items():
        entry = decode_entry(value)
        if entry is None:
            continue
        boot, count = entry
        if node_boots.get(node) == boot:
            live[node] = count
    return live


def merge_pages(pages: Iterable[Iterable[str]], *, limit: int) -> tuple[list[str], bool]:
    """Merge the sorted user pages of several nodes: the first ``limit`` distinct users, and if more exist."""
    merged = sorted({user for page in pages for user in page})
    return merged[:limit], len(merged) > limit


class RedisPresence:
    """Cluster presence in Redis; see the module docstring for the key layout and its guarantees."""

    def __init__(
        self, redis: Redis, table: ConnectionTable, *, keys: RedisKeys, node_id: str, address: str,
        ttl_secs: float, heartbeat_secs: float, linger_secs: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.node_id = node_id
        self.address = address
        self.boot = secrets.token_hex(6)
        self._redis = redis
        self._keys = keys
        self._ttl_ms = max(1000, int(ttl_secs * 1000))
        self._heartbeat_secs = heartbeat_secs
        self._linger_secs = linger_secs
        self._clock = clock
        self._written: dict[str, int] = {}  # what Redis holds for our users (as far as we know)
        self._dirty: set[str] = set()
        self._full = True  # the next flush rewrites everything (start, after a failure, resync)
        self._last_beat_at: float | None = None
        self._failing_since: float | None = None
        self._wake = asyncio.Event()
        self._flushed: asyncio.Future[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._started_at = time.time()

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        # A node restarted under the same id must not inherit its previous incarnation's user set.
        try:
            await self._redis.delete(self._keys.node_users(self.node_id))
        except (RedisError, OSError) as exc:
            self._note_failure(exc)
        self._task = asyncio.create_task(self._run(), name=f"presence-{self.node_id}")
        await self._wait_flush(CONNECT_WAIT_SECS)

    async def close(self) -> None:
        """Deregister at once (a clean shutdown need not wait for the TTL)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user in self._written:
                    pipe.hdel(self._keys.presence(user), self.node_id)
                pipe.delete(self._keys.node_users(self.node_id), self._keys.node(self.node_id))
                pipe.srem(self._keys.nodes, self.node_id)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not deregister node %s from Redis (%s); it expires by TTL", self.node_id, exc)

    # -- connections ----------------------------------------------------------------------------------

    async def connected(self, user: str) -> None:
        known = user in self._written
        self._mark(user)
        if not known and self._failing_since is None:
            await self._wait_flush(CONNECT_WAIT_SECS)

    def disconnected(self, user: str) -> None:
        self._mark(user)

    async def resync(self) -> None:
        self._full = True
        self._wake.set()
        await self._wait_flush(CONNECT_WAIT_SECS)

    def _mark(self, user: str) -> None:
        self._dirty.add(user)
        self._wake.set()

    async def _wait_flush(self, timeout: float) -> None:
        if self._flushed is None:
            self._flushed = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._flushed), timeout)

    # -- the writer -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            now = self._clock()
            delay = next_wakeup_secs(
                now=now, last_beat_at=self._last_beat_at, heartbeat_secs=self._heartbeat_secs,
                failing=self._failing_since is not None,
                linger_deadlines=(at + self._linger_secs for at in self.table.gone_at.values()),
            )
            if delay > 0 and not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            waiter, self._flushed = self._flushed, None
            ok = False
            try:
                await self._flush(self._clock())
                ok = True
            except (RedisError, OSError) as exc:
                self._note_failure(exc)
                self._full = True
            except Exception:
                log.exception("presence writer failed")
                self._full = True
            if ok and self._failing_since is not None:
                log.warning("Redis reachable again after %.1f s; presence of node %s rewritten",
                            self._clock() - self._failing_since, self.node_id)
                self._failing_since = None
            if waiter is not None and not waiter.done():
                waiter.set_result(ok)
            if not ok:
                await asyncio.sleep(RETRY_SECS)

    def _note_failure(self, exc: BaseException) -> None:
        if self._failing_since is None:
            self._failing_since = self._clock()
            log.warning("Redis unavailable for presence of node %s (%s); serving on, retrying every %.0f s",
                        self.node_id, exc, RETRY_SECS)

    async def _flush(self, now: float) -> None:
        full = self._full or beat_due(now=now, last_beat_at=self._last_beat_at,
                                      heartbeat_secs=self._heartbeat_secs)
        expired = [u for u, at in self.table.gone_at.items()
                   if linger_over(now=now, gone_at=at, linger_secs=self._linger_secs)]
        dirty, self._dirty = self._dirty, set()
        users = dirty | set(expired)
        if full:
            users |= set(self._written) | set(self.table.connections)
        ordered = sorted(users)
        try:
            if full:
                await self._write_node_record()
            for start in range(0, len(ordered), REFRESH_CHUNK_USERS):
                await self._write_users(ordered[start:start + REFRESH_CHUNK_USERS], now, full=full)
        except BaseException:
            self._dirty |= dirty  # sent again by the next attempt
            raise
        if full:
            self._full = False
            self._last_beat_at = now

    async def _write_node_record(self) -> None:
        record = json.dumps({"node": self.node_id, "address": self.address, "boot": self.boot,
                             "started_at": int(self._started_at), "beat_at": int(time.time())})
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._keys.node(self.node_id), record, px=self._ttl_ms)
            pipe.sadd(self._keys.nodes, self.node_id)
            pipe.pexpire(self._keys.node_users(self.node_id), self._ttl_ms)
            await pipe.execute()

    async def _write_users(self, users: list[str], now: float, *, full: bool) -> None:
        node_users = self._keys.node_users(self.node_id)
        plan: list[tuple[str, int | None]] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                count = self.table.count(user)
                gone = self.table.gone_at.get(user)
                if count == 0 and gone is not None and not linger_over(
                        now=now, gone_at=gone, linger_secs=self._linger_secs):
                    count = self._written.get(user, 0)  # lingering: keep (and refresh) what is there
                    if count == 0:
                        continue
                key = self._keys.presence(user)
                if count > 0:
                    if not full and self._written.get(user) == count:
                        continue  # as written (a long-poll between two polls): the next beat refreshes it
                    pipe.hset(key, self.node_id, encode_entry(self.boot, count))
                    pipe.zadd(node_users, {user: 0})
                    pipe.pexpire(node_users, self._ttl_ms)  # a node dying before its next beat
                    pipe.pexpire(key, self._ttl_ms)
                    plan.append((user, count))
                else:
                    pipe.hdel(key, self.node_id)
                    pipe.zrem(node_users, user)
                    plan.append((user, None))
            if not plan:
                return
            await pipe.execute()
        for user, count in plan:
            if count is None:
                self._written.pop(user, None)
                if self.table.count(user) == 0:
                    self.table.gone_at.pop(user, None)
            else:
                self._written[user] = count

    # -- reads ----------------------------------------------------------------------------------------

    async def _node_boots(self, nodes: Iterable[str]) -> dict[str, str | None]:
        names = sorted(set(nodes))
        if not names:
            return {}
        records = await self._redis.mget([self._keys.node(n) for n in names])
        boots: dict[str, str | None] = {}
        for name, raw in zip(names, records, strict=True):
            try:
                boots[name] = json.loads(raw)["boot"] if raw else None
            except (ValueError, KeyError, TypeError):
                boots[name] = None
        return boots

    async def lookup(self, user: str) -> PresenceInfo:
        try:
            fields = _decode_map(await self._redis.hgetall(self._keys.presence(user)))
            live = live_connections(fields, await self._node_boots(fields))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"presence is unavailable: {exc}", code="presence_unavailable") from None
        return PresenceInfo(user, sum(live.values()), tuple(sorted(live)))

    async def online(self, *, after: str, limit: int) -> OnlinePage:
        """Users online anywhere, by user id after ``after``; one page costs three round trips."""
        try:
            nodes = [_text(n) for n in await self._redis.smembers(self._keys.nodes)]
            boots = await self._node_boots(nodes)
            live_nodes = sorted(n for n, boot in boots.items() if boot)
            lower = f"({after}" if after else "-"
            async with self._redis.pipeline(transaction=False) as pipe:
                for node in live_nodes:
                    pipe.zrangebylex(self._keys.node_users(node), lower, "+", start=0, num=limit + 1)
                pages = await pipe.execute()
            users, more = merge_pages(([_text(u) for u in page] for page in pages), limit=limit)
            async with self._redis.pipeline(transaction=False) as pipe:
                for user in users:
                    pipe.hgetall(self._keys.presence(user))
                hashes = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"presence is unavailable: {exc}", code="presence_unavailable") from None
        infos = []
        for user, raw in zip(users, hashes, strict=True):
            live = live_connections(_decode_map(raw), boots)
            if live:  # else the user left between the two reads
                infos.append(PresenceInfo(user, sum(live.values()), tuple(sorted(live))))
        return OnlinePage(infos, more, users[-1] if users else None)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _decode_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}
