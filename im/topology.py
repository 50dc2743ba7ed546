"""Single node or cluster: the one choice made at start, and everything that follows from it.

A topology decides how far a node trusts the inbox heads it knows (the only writer: for good; a cluster
node: a few seconds after the store confirmed them, kept current meanwhile by the other nodes' news),
where notifies go (this process, or Redis to the nodes that hold each user, with the committed entries),
how presence is published, and how the ``single`` login policy reaches connections on other nodes.
Both write the same way (``im/delivery/seqs.py``). Nothing else in the code asks which one it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from config import Settings
from im.cluster.bus import Bus, LearnFn, LocalBus
from im.cluster.presence import LocalPresence, Presence
from im.cluster.redis_bus import RedisBus
from im.cluster.redis_keys import RedisKeys
from im.cluster.redis_presence import RedisPresence
from im.delivery.heads import HeadBook
from im.delivery.hub import Hub
from im.delivery.leases import RedisLeases, StoreLeases
from im.delivery.seqs import Seqs
from im.storage.store import Store

__all__ = ["Cluster", "SingleNode", "Topology", "topology_from"]

log = logging.getLogger(__name__)

# Redis calls fail fast instead of stalling a send (a notify is a hint; presence retries by itself).
REDIS_SOCKET_TIMEOUT_SECS = 2.0
# redis-py PINGs an idle subscription this often, so a silently dead connection is noticed.
REDIS_HEALTH_CHECK_SECS = 10

KickLocalFn = Callable[[str, float], None]


class Topology(Protocol):
    bus: Bus
    presence: Presence

    def seq_allocator(self, store: Store) -> Seqs:
        """How this node numbers inbox entries, from the heads it knows."""

    async def route_kick(self, user: str, before: float) -> None:
        """Ask the other nodes to kick ``user``'s connections opened before ``before``."""

    async def start(self, *, kick_local: KickLocalFn, learn: LearnFn) -> None:
        """Start publishing presence and delivering notifies to the hub; ``kick_local`` serves the
        kicks other nodes route here, ``learn`` takes in what they committed."""

    async def close(self) -> None:
        """Stop delivering notifies, withdraw presence, release connections."""


class SingleNode:
    """One process is the only writer and the only holder of connections: nothing leaves it."""

    def __init__(self, hub: Hub, *, node_id: str, presence_linger_secs: float, head_save_secs: float) -> None:
        self._hub = hub
        self._head_save_secs = head_save_secs
        self.bus: Bus = LocalBus()
        self.presence: Presence = LocalPresence(hub.table, node_id=node_id, linger_secs=presence_linger_secs)

    def seq_allocator(self, store: Store) -> Seqs:
        # The only writer: what it knows of a head is the head, for good.
        return Seqs(store, HeadBook(store, save_secs=self._head_save_secs))

    async def route_kick(self, user: str, before: float) -> None:
        pass  # no other node holds connections

    async def start(self, *, kick_local: KickLocalFn, learn: LearnFn) -> None:
        await self.bus.start(self._hub.deliver)

    async def close(self) -> None:
        await self.bus.close()

    def __str__(self) -> str:
        return "single node"


class Cluster:
    """Several nodes share the store and one Redis: notifies, presence and kicks go through Redis, and
    seqs are claimed from the store's counters."""

    def __init__(self, hub: Hub, redis: Redis | RedisCluster, settings: Settings) -> None:
        self._hub = hub
        self._redis = redis
        self._redis_url = settings.redis_url
        self._head_save_secs = settings.head_save_secs
        self._head_trust_secs = settings.head_trust_secs
        self._book: HeadBook | None = None
        keys = self._keys = RedisKeys(settings.redis_prefix)
        self.node_id = settings.effective_node_id
        self._presence = RedisPresence(
            redis, hub.table, keys=keys, node_id=self.node_id,
            address=settings.node_address or f"{settings.host}:{settings.port}",
            ttl_secs=settings.presence_ttl_secs, heartbeat_secs=settings.heartbeat_secs,
            linger_secs=settings.presence_linger_secs,
        )
        self.presence: Presence = self._presence
        self._bus = RedisBus(redis, node_id=self.node_id, keys=keys, on_resubscribed=self._resubscribed)
        self.bus: Bus = self._bus

    def seq_allocator(self, store: Store) -> Seqs:
        # Other nodes write too: a known head may be behind, so readers confirm it in the store after
        # a while (writers find out from the unique inbox keys at once).
        self._book = HeadBook(store, save_secs=self._head_save_secs, trust_secs=self._head_trust_secs)
        leases = RedisLeases(self._redis, self._keys, self.node_id, StoreLeases(store, self.node_id))
        return Seqs(store, self._book, leases)

    async def route_kick(self, user: str, before: float) -> None:
        await self._bus.publish_kick(user, before)

    async def start(self, *, kick_local: KickLocalFn, learn: LearnFn) -> None:
        self._bus.on_kick = kick_local
        self._bus.on_heads = self._hub.deliver_unless_told
        await self.presence.start()
        await self._bus.start(self._hub.deliver, learn)

    async def _resubscribed(self) -> None:
        # Redis may have restarted empty: rewrite presence first, so notifies reach this node again,
        # then make every local listener re-check the store for what was stored meanwhile; notifies
        # may have been lost, so no head known here is trusted until the store confirms it.
        if self._book is not None:
            self._book.distrust_all()
        await self._presence.resync()
        self._hub.poke_all()

    async def close(self) -> None:
        await self._bus.close()
        await self.presence.close()
        await self._redis.aclose()

    def __str__(self) -> str:
        return f"cluster node {self.node_id} on Redis {_redacted(self._redis_url)}"


def topology_from(settings: Settings, hub: Hub) -> Topology:
    """A cluster when ``IM_REDIS_URL`` is set, else a single node."""
    if not settings.redis_url:
        return SingleNode(hub, node_id=settings.effective_node_id,
                          presence_linger_secs=settings.presence_linger_secs,
                          head_save_secs=settings.head_save_secs)
    options = dict(
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECS, socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECS,
        health_check_interval=REDIS_HEALTH_CHECK_SECS,
        # One immediate retry on a connection error only: a pooled connection that went stale when
        # Redis restarted is replaced transparently; outages themselves are handled by the callers
        # (see im/cluster/redis_bus.py), never by waiting here.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    # A Redis Cluster: the URL names one node and the client discovers the others.
    if settings.redis_cluster:
        return Cluster(hub, RedisCluster.from_url(settings.redis_url, **options), settings)
    return Cluster(hub, Redis.from_url(settings.redis_url, **options), settings)


def _redacted(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at and credentials else url
