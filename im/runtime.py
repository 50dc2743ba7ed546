"""Wires the domain together from settings: store (embedded or external), auth, hub, bus, service."""

from __future__ import annotations

import logging
from pathlib import Path

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from config import Settings
from im.accounts.auth import TokenIssuer
from im.cluster.bus import Bus, LocalBus
from im.cluster.presence import LocalPresence, Presence, RedisKeys, RedisPresence
from im.cluster.redis_bus import RedisBus
from im.conversations.keys import KEYS_COLLECTION, keyring_from
from im.conversations.service import Conversations
from im.delivery.cache import InboxCache
from im.delivery.hub import Hub
from im.delivery.inbox import InboxStore
from im.limits import Limits
from im.ops.metrics import Metrics
from im.ops.webhooks import webhooks_from
from im.service import MessagingService
from im.storage.embedded import EmbeddedMongo
from im.storage.secrets_file import load_or_create_secret
from im.storage.store import Store

__all__ = ["Runtime"]

log = logging.getLogger(__name__)

# Redis calls fail fast instead of stalling a send (a notify is a hint; presence retries by itself).
REDIS_SOCKET_TIMEOUT_SECS = 2.0
# redis-py PINGs an idle subscription this often, so a silently dead connection is noticed.
REDIS_HEALTH_CHECK_SECS = 10


def limits_from(settings: Settings) -> Limits:
    failures_per_sec = settings.login_max_failures / settings.login_failure_window_secs
    return Limits(
        per_ip=Limits.limiter("requests per address", settings.rate_ip_per_sec, settings.rate_ip_burst),
        sends_per_user=Limits.limiter("messages per user", settings.rate_send_per_sec,
                                      settings.rate_send_burst),
        login_failures_per_user=Limits.limiter("failed logins per user", failures_per_sec,
                                               settings.login_max_failures),
        login_failures_per_ip=Limits.limiter("failed logins per address", failures_per_sec * 5,
                                             settings.login_max_failures * 5),
        max_connections_per_user=settings.max_connections_per_user,
    )


class Runtime:
    """Everything a node runs besides its HTTP server; ``close()`` releases it in reverse order."""

    def __init__(self, settings: Settings, service: MessagingService, embedded: EmbeddedMongo | None,
                 redis: Redis | None = None) -> None:
        self.settings = settings
        self.service = service
        self.embedded = embedded
        self.redis = redis

    @classmethod
    async def start(cls, settings: Settings, *, bus: Bus | None = None) -> Runtime:
        embedded: EmbeddedMongo | None = None
        mongo_url = settings.mongo_url
        if not mongo_url:
            data = Path(settings.data_dir)
            embedded = EmbeddedMongo(
                data / "mongo", port=settings.embedded_mongo_port, log_path=data / "secantus.log",
                sync_on_commit=settings.journal,
            ).start()
            mongo_url = embedded.url
        redis: Redis | None = None
        try:
            hub = Hub()
            presence: Presence = LocalPresence(node_id=settings.effective_node_id,
                                               linger_secs=settings.presence_linger_secs)
            if settings.redis_url and bus is None:
                redis, bus, presence = _cluster_parts(settings, hub)
            store = Store(
                mongo_url, settings.mongo_db, write_concern=settings.write_concern,
                journal=settings.journal, timeout_secs=settings.store_timeout_secs,
                max_idle_secs=settings.mongo_max_idle_secs,
            )
            secret = settings.jwt_secret or load_or_create_secret(settings.data_dir, "jwt_secret")
            metrics = Metrics()
            keys = keyring_from(settings, store.db[KEYS_COLLECTION])
            service = MessagingService(
                store=store,
                inbox=InboxStore(store, device_idle_secs=settings.device_idle_secs,
                                 max_devices_per_user=settings.max_devices_per_user, cipher=keys,
                                 cache=_inbox_cache(settings, single_writer=bus is None),
                                 ack_linger_secs=settings.ack_linger_secs,
                                 trim_interval_secs=settings.trim_interval_secs),
                tokens=TokenIssuer(secret, ttl_secs=settings.jwt_ttl_secs, issuer=settings.jwt_issuer,
                                   old_secrets=settings.jwt_old_secret_list),
                hub=hub,
                bus=bus or LocalBus(),
                presence=presence,
                login_policy=settings.login_policy,
                commit_max_batch=settings.commit_max_batch,
                commit_max_in_flight=settings.commit_max_in_flight,
                limits=limits_from(settings),
                metrics=metrics,
                webhooks=webhooks_from(settings, metrics),
                conversations=Conversations(
                    store, keys=keys, direct_policy=settings.direct_policy,
                    max_group_members=settings.group_max_members, file_max_bytes=settings.file_max_bytes,
                ),
            )
            if isinstance(bus, RedisBus):
                bus.on_kick = service.kick_local
                service.remote_kick = bus.publish_kick
            await service.start()
        except BaseException:
            if redis is not None:
                await redis.aclose()
            if embedded is not None:
                embedded.stop()
            raise
        where = "embedded SecantusDB" if embedded else "external MongoDB"
        log.info("store: %s, database %r", where, settings.mongo_db)
        if redis is not None:
            log.info("cluster: node %s on Redis %s, login policy %s", settings.effective_node_id,
                     _redacted(settings.redis_url), settings.login_policy)
        return cls(settings, service, embedded, redis)

    async def close(self) -> None:
        await self.service.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.service.store.close()
        if self.embedded is not None:
            self.embedded.stop()


def _cluster_parts(settings: Settings, hub: Hub) -> tuple[Redis, RedisBus, RedisPresence]:
    """The Redis client, bus and presence of a cluster node (``IM_REDIS_URL`` set)."""
    redis = Redis.from_url(
        settings.redis_url, socket_timeout=REDIS_SOCKET_TIMEOUT_SECS,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECS, health_check_interval=REDIS_HEALTH_CHECK_SECS,
        # One immediate retry on a connection error only: a pooled connection that went stale when
        # Redis restarted is replaced transparently; outages themselves are handled by the callers
        # (see im.cluster.redis_bus), never by waiting here.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    keys = RedisKeys(settings.redis_prefix)
    node_id = settings.effective_node_id
    presence = RedisPresence(
        redis, keys=keys, node_id=node_id,
        address=settings.node_address or f"{settings.host}:{settings.port}",
        ttl_secs=settings.presence_ttl_secs, heartbeat_secs=settings.heartbeat_secs,
        linger_secs=settings.presence_linger_secs,
    )

    async def resubscribed() -> None:
        # Redis may have restarted empty: rewrite presence first, so notifies reach this node again,
        # then make every local listener re-check the store for what was stored meanwhile.
        await presence.resync()
        hub.poke_all()

    bus = RedisBus(redis, node_id=node_id, keys=keys, on_resubscribed=resubscribed)
    return redis, bus, presence


def _inbox_cache(settings: Settings, *, single_writer: bool) -> InboxCache | None:
    """The node's cache of the newest inbox entries. Only a node that is the store's only writer (no
    cluster bus) may also trust its cached heads; cluster nodes read the head on every pull."""
    if settings.inbox_cache_entries <= 0:
        return None
    return InboxCache(authoritative=single_writer, max_entries=settings.inbox_cache_entries)


def _redacted(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at and credentials else url
