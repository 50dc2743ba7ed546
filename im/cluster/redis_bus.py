"""Cluster bus over Redis pub/sub: each node subscribes to its own channel only.

``publish`` delivers to this node's hub directly, then routes the batch's news to the *other* nodes
that hold each recipient: one pipelined read of the recipients' presence hashes (see
``im/cluster/redis_presence.py``; answers are remembered for a moment, ``holders.py``), then one message
per target node with the heads, epochs and (bounded) entries of the users it holds
(``im/cluster/news.py``), then the batch's heads to every node (``im:heads``). A node that holds a user
the routing did not know of yet notifies it from ``im:heads`` (``on_heads``). No script: keys are read
one by one, so presence spreads over a Redis Cluster's slots.

A notify is a hint, so Redis trouble never reaches the sender: ``publish`` never raises, an outage is
logged once (and its end once), and heads that could not be published are kept (merged by user, max
seq; entries are dropped, receivers read the store) and sent again when Redis answers. The subscriber
reconnects by itself; after every (re)subscribe it calls ``on_resubscribed`` (the topology rewrites
presence, then pokes every local listener to re-check the store), because notifies sent while this
node was not subscribed are lost.

Messages on a node channel are JSON: news (``{"h": ...}``, see ``news.py``) or ``{"k": {"user",
"before", "from"}}`` (kick that user's connections older than ``before``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from im.cluster.bus import DeliverFn, LearnFn
from im.cluster.holders import HolderCache
from im.cluster.news import InboxNews, decode_heads, decode_news, encode_heads, encode_news
from im.cluster.redis_keys import RedisKeys

__all__ = ["RedisBus", "retry_due"]

log = logging.getLogger(__name__)

KickFn = Callable[[str, float], None]
ResubscribedFn = Callable[[], Awaitable[None]]

# Presence hashes read per pipeline round trip (bounds one pipeline's memory).
ROUTE_CHUNK_USERS = 1000
# Entries carried to one node per batch, in bytes of JSON; beyond it that node's users get heads only.
NEWS_ENTRY_BYTES = 64 * 1024
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


def retry_due(*, now: float, last_attempt_at: float | None, retry_secs: float = PUBLISH_RETRY_SECS) -> bool:
    """While Redis is down, whether this publish should try it again."""
    return last_attempt_at is None or now - last_attempt_at >= retry_secs


class RedisBus:
    def __init__(
        self, redis: Redis | RedisCluster, *, node_id: str, keys: RedisKeys,
        on_resubscribed: ResubscribedFn | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self.on_kick: KickFn | None = None  # set by the topology once the node's connections exist
        # Set by the topology: told every other node's heads, for users whose routed notify did not come.
        self.on_heads: DeliverFn | None = None
        self._holder_cache = HolderCache()
        self._redis = redis
        self._keys = keys
        self._on_resubscribed = on_resubscribed
        self._clock = clock
        self._deliver: DeliverFn | None = None
        self._learn: LearnFn | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._backlog = InboxNews()
        self._down_since: float | None = None
        self._last_attempt_at: float | None = None
        self._publish_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self, deliver: DeliverFn, learn: LearnFn | None = None) -> None:
        self._deliver = deliver
        self._learn = learn
        self._listener = asyncio.create_task(self._listen(), name=f"bus-{self.node_id}")
        try:
            await asyncio.wait_for(self._subscribed.wait(), START_WAIT_SECS)
        except TimeoutError:
            log.warning("bus: not subscribed to Redis after %.0f s; starting anyway", START_WAIT_SECS)

    async def close(self) -> None:
        self._deliver = None
        self._learn = None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    # -- publishing -----------------------------------------------------------------------------------

    async def publish(self, news: InboxNews) -> None:
        deliver = self._deliver
        if deliver is not None:
            for user, seq in news.heads.items():
                deliver(user, seq)  # this node's own listeners need no Redis
        if self._down_since is not None and not retry_due(now=self._clock(),
                                                          last_attempt_at=self._last_attempt_at):
            self._backlog.merge_heads(news)
            self._trim_backlog()
            return
        await self._flush(news)

    async def _flush(self, news: InboxNews | None = None) -> None:
        async with self._publish_lock:
            pending, self._backlog = self._backlog, InboxNews()
            if news is not None:
                if pending.heads:
                    news.merge_heads(pending)
                pending = news
            if not pending.heads:
                return
            self._last_attempt_at = self._clock()
            try:
                for node, users in (await self._holders(list(pending.heads))).items():
                    await self._redis.publish(self._keys.channel(node),
                                              encode_news(pending, users, max_entry_bytes=NEWS_ENTRY_BYTES))
                await self._redis.publish(self._keys.heads_channel,
                                          encode_heads(pending, node_id=self.node_id))
            except (RedisError, OSError) as exc:
                self._backlog.merge_heads(pending)
                self._trim_backlog()
                self._went_down(exc)
                return
            except Exception:
                log.exception("bus: publishing notifies failed")
                return
            self._came_back()

    async def _holders(self, users: list[str]) -> dict[str, list[str]]:
        """The other nodes holding each of ``users``: node -> its users (presence, remembered for a
        moment, see ``holders.py``; one round trip per chunk of the rest)."""
        now = self._clock()
        known, missing = self._holder_cache.split(users, now)
        for start in range(0, len(missing), ROUTE_CHUNK_USERS):
            chunk = missing[start:start + ROUTE_CHUNK_USERS]
            async with self._redis.pipeline(transaction=False) as pipe:
                for user in chunk:
                    pipe.hkeys(self._keys.presence(user))
                holders = await pipe.execute()
            for user, nodes in zip(chunk, holders, strict=True):
                others = tuple(node for node in _texts(nodes) if node != self.node_id)
                self._holder_cache.put(user, others, now)
                known[user] = others
        per_node: dict[str, list[str]] = {}
        for user in users:
            for node in known[user]:
                per_node.setdefault(node, []).append(user)
        return per_node

    async def publish_kick(self, user: str, before: float) -> None:
        """Ask the other nodes holding ``user`` to kick its connections opened before ``before``."""
        payload = json.dumps({"k": {"user": user, "before": before, "from": self.node_id}})
        try:
            for node in await self._holders([user]):
                await self._redis.publish(self._keys.channel(node), payload)
        except (RedisError, OSError) as exc:
            self._went_down(exc)

    def _trim_backlog(self) -> None:
        if len(self._backlog.heads) > MAX_BACKLOG_USERS:
            log.warning("bus: dropping %d unpublished notifies (Redis down too long); listeners re-check "
                        "on resubscribe and long-poll timeout", len(self._backlog.heads))
            self._backlog = InboxNews()

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
                await pubsub.subscribe(channel, self._keys.heads_channel)
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
        self._holder_cache.clear()
        if self._on_resubscribed is not None:
            await self._on_resubscribed()
        await self._flush()

    def _dispatch(self, data: Any) -> None:
        try:
            message = json.loads(data)
            if isinstance(message.get("w"), dict):
                if message.get("f") != self.node_id:
                    heads = decode_heads(message)
                    if self._learn is not None:
                        self._learn(heads)
                    if self.on_heads is not None:
                        for user, seq in heads.heads.items():
                            self.on_heads(user, seq)
                return
            if isinstance(message.get("h"), dict):
                news = decode_news(message)
                if self._learn is not None:
                    self._learn(news)  # before the hub wakes listeners: their pull finds the entries
                deliver = self._deliver
                if deliver is not None:
                    for user, seq in news.heads.items():
                        deliver(user, seq)
                return
            kick = message.get("k")
            if isinstance(kick, dict):
                if self.on_kick is not None and kick.get("from") != self.node_id:
                    self.on_kick(str(kick["user"]), float(kick["before"]))
                return
            log.warning("bus: unknown message on the node channel: %.200r", data)
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("bus: malformed message on the node channel: %.200r", data)


def _texts(values: Iterable[bytes | str]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]
