"""Cluster bus over Redis pub/sub: each node subscribes to its own channel only.

``publish`` delivers to this node's hub directly, then routes the heads to the *other* nodes that hold
each user, in one round trip per batch: a Lua script reads the presence hashes (see
:mod:`im.cluster.presence`) and publishes one message per target node. Nodes that hold none of the users
receive nothing.

A notify is a hint, so Redis trouble never reaches the sender: ``publish`` never raises, an outage is
logged once (and its end once), and heads that could not be published are kept (merged by user, max
seq) and sent again when Redis answers. The subscriber reconnects by itself; after every (re)subscribe
it calls ``on_resubscribed`` (the topology rewrites presence, then pokes every local listener to
re-check the store), because notifies sent while this node was not subscribed are lost.

Messages on a node channel are JSON: ``{"h": {user: seq}}`` (inbox heads) or
``{"k": {"user", "before", "from"}}`` (kick that user's connections older than ``before``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from im.cluster.bus import DeliverFn
from im.cluster.redis_keys import RedisKeys

__all__ = ["RedisBus", "merge_heads", "retry_due"]

log = logging.getLogger(__name__)

KickFn = Callable[[str, float], None]
ResubscribedFn = Callable[[], Awaitable[None]]

# Users per script call: bounds the time one script holds Redis (a group-commit batch is <= 512 heads).
SCRIPT_CHUNK_USERS = 1000
# While Redis is down, publishes skip it and try again at most this often.
PUBLISH_RETRY_SECS = 1.0
# Heads kept for republishing during an outage; beyond it they are dropped (the resubscribe poke covers
# listeners on nodes that lost their subscription, and long-polls re-check on timeout).
MAX_BACKLOG_USERS = 100_000
# Subscriber reconnect backoff.
RESUBSCRIBE_MIN_SECS = 0.2
RESUBSCRIBE_MAX_SECS = 2.0
# get_message wakes this often even without traffic (and lets redis-py send its health-check PINGs).
LISTEN_POLL_SECS = 1.0
# Node start waits this long for the first subscription; without Redis it starts anyway.
START_WAIT_SECS = 5.0

# KEYS: presence hashes; ARGV: channel prefix, own node id, then user, seq pairs (same order as KEYS).
_NOTIFY_LUA = """
local prefix, me = ARGV[1], ARGV[2]
local per_node = {}
for i, key in ipairs(KEYS) do
  local nodes = redis.call('HKEYS', key)
  for _, node in ipairs(nodes) do
    if node ~= me then
      local heads = per_node[node]
      if not heads then heads = {}; per_node[node] = heads end
      heads[ARGV[1 + 2 * i]] = ARGV[2 + 2 * i]
    end
  end
end
local sent = 0
for node, heads in pairs(per_node) do
  redis.call('PUBLISH', prefix .. node, cjson.encode({h = heads}))
  sent = sent + 1
end
return sent
"""

# KEYS: one presence hash; ARGV: channel prefix, own node id, payload.
_ROUTE_LUA = """
local sent = 0
for _, node in ipairs(redis.call('HKEYS', KEYS[1])) do
  if node ~= ARGV[2] then
    redis.call('PUBLISH', ARGV[1] .. node, ARGV[3])
    sent = sent + 1
  end
end
return sent
"""


def merge_heads(into: dict[str, int], heads: Mapping[str, int]) -> None:
    """Keep the highest seq per user: a notify for seq n covers every lower one."""
    for user, seq in heads.items():
        if seq > into.get(user, 0):
            into[user] = seq


def retry_due(*, now: float, last_attempt_at: float | None, retry_secs: float = PUBLISH_RETRY_SECS) -> bool:
    """While Redis is down, whether this publish should try it again."""
    return last_attempt_at is None or now - last_attempt_at >= retry_secs


class RedisBus:
    def __init__(
        self, redis: Redis, *, node_id: str, keys: RedisKeys,
        on_resubscribed: ResubscribedFn | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self.on_kick: KickFn | None = None  # set by the topology once the node's connections exist
        self._redis = redis
        self._keys = keys
        self._on_resubscribed = on_resubscribed
        self._clock = clock
        self._notify = redis.register_script(_NOTIFY_LUA)
        self._route = redis.register_script(_ROUTE_LUA)
        self._deliver: DeliverFn | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._backlog: dict[str, int] = {}
        self._down_since: float | None = None
        self._last_attempt_at: float | None = None
        self._publish_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self, deliver: DeliverFn) -> None:
        self._deliver = deliver
        self._listener = asyncio.create_task(self._listen(), name=f"bus-{self.node_id}")
        try:
            await asyncio.wait_for(self._subscribed.wait(), START_WAIT_SECS)
        except TimeoutError:
            log.warning("bus: not subscribed to Redis after %.0f s; starting anyway", START_WAIT_SECS)

    async def close(self) -> None:
        self._deliver = None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    # -- publishing -----------------------------------------------------------------------------------

    async def publish(self, heads: Mapping[str, int]) -> None:
        deliver = self._deliver
        if deliver is not None:
            for user, seq in heads.items():
                deliver(user, seq)  # this node's own listeners need no Redis
        merge_heads(self._backlog, heads)
        if self._down_since is not None and not retry_due(now=self._clock(),
                                                          last_attempt_at=self._last_attempt_at):
            self._trim_backlog()
            return
        await self._flush_backlog()

    async def _flush_backlog(self) -> None:
        async with self._publish_lock:
            if not self._backlog:
                return
            pending, self._backlog = self._backlog, {}
            self._last_attempt_at = self._clock()
            try:
                users = list(pending)
                for start in range(0, len(users), SCRIPT_CHUNK_USERS):
                    chunk = users[start:start + SCRIPT_CHUNK_USERS]
                    args: list[str] = [self._keys.channel_prefix, self.node_id]
                    for user in chunk:
                        args += (user, str(pending[user]))
                    await self._notify(keys=[self._keys.presence(u) for u in chunk], args=args)
            except (RedisError, OSError) as exc:
                merge_heads(self._backlog, pending)
                self._trim_backlog()
                self._went_down(exc)
                return
            except Exception:
                log.exception("bus: publishing notifies failed")
                return
            self._came_back()

    async def publish_kick(self, user: str, before: float) -> None:
        """Ask the other nodes holding ``user`` to kick its connections opened before ``before``."""
        payload = json.dumps({"k": {"user": user, "before": before, "from": self.node_id}})
        try:
            await self._route(keys=[self._keys.presence(user)],
                              args=[self._keys.channel_prefix, self.node_id, payload])
        except (RedisError, OSError) as exc:
            self._went_down(exc)

    def _trim_backlog(self) -> None:
        if len(self._backlog) > MAX_BACKLOG_USERS:
            log.warning("bus: dropping %d unpublished notifies (Redis down too long); listeners re-check "
                        "on resubscribe and long-poll timeout", len(self._backlog))
            self._backlog.clear()

    def _went_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning("bus: Redis unavailable (%s); notifies to other nodes are held and sent when it is "
                        "back; this node keeps serving", exc)

    def _came_back(self) -> None:
        if self._down_since is not None:
            log.warning("bus: Redis publishing works again after %.1f s", self._clock() - self._down_since)
            self._down_since = None

    # -- subscribing ----------------------------------------------------------------------------------

    async def _listen(self) -> None:
        channel = self._keys.channel(self.node_id)
        delay = RESUBSCRIBE_MIN_SECS
        lost_at: float | None = None
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                if lost_at is not None:
                    log.warning("bus: resubscribed to %s after %.1f s", channel, self._clock() - lost_at)
                    lost_at = None
                delay = RESUBSCRIBE_MIN_SECS
                await self._after_subscribe()
                self._subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=LISTEN_POLL_SECS)
                    if message is not None:
                        self._dispatch(message.get("data"))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if lost_at is None:
                    lost_at = self._clock()
                    log.warning("bus: subscription to %s lost (%s); reconnecting", channel, exc)
            except Exception:
                log.exception("bus: subscriber failed; reconnecting")
                lost_at = lost_at or self._clock()
            finally:
                self._subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESUBSCRIBE_MAX_SECS)

    async def _after_subscribe(self) -> None:
        """Notifies may have been lost while unsubscribed: restore presence, resend held heads, poke."""
        if self._on_resubscribed is not None:
            await self._on_resubscribed()
        await self._flush_backlog()

    def _dispatch(self, data: Any) -> None:
        try:
            message = json.loads(data)
            heads = message.get("h")
            if isinstance(heads, dict):
                deliver = self._deliver
                if deliver is not None:
                    for user, seq in heads.items():
                        deliver(str(user), int(seq))
                return
            kick = message.get("k")
            if isinstance(kick, dict):
                if self.on_kick is not None and kick.get("from") != self.node_id:
                    self.on_kick(str(kick["user"]), float(kick["before"]))
                return
            log.warning("bus: unknown message on the node channel: %.200r", data)
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("bus: malformed message on the node channel: %.200r", data)
