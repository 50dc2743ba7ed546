"""Wires a node together from settings: store (embedded or external), topology, accounts, inboxes,
conversations, and the service the transports call."""

from __future__ import annotations

import logging
from pathlib import Path

from config import Settings
from im.accounts.accounts import Accounts
from im.accounts.passwords import PasswordHasher
from im.accounts.tokens import TokenIssuer
from im.accounts.users import UserStore
from im.conversations.keys import KEYS_COLLECTION, keyring_from
from im.conversations.service import Conversations
from im.delivery.admission import SendAdmission
from im.delivery.cache import InboxCache
from im.delivery.hub import Hub
from im.delivery.inboxes import Inboxes
from im.limits import Limits
from im.ops.metrics import Metrics
from im.ops.webhooks import webhooks_from
from im.service import MessagingService
from im.storage.embedded import EmbeddedMongo
from im.storage.secrets_file import load_or_create_secret
from im.storage.store import Store
from im.topology import Topology, topology_from

__all__ = ["Runtime"]

log = logging.getLogger(__name__)


def limits_from(settings: Settings) -> Limits:
    failures_per_sec = settings.login_max_failures / settings.login_failure_window_secs
    return Limits(
        per_ip=Limits.limiter("requests per address", settings.rate_ip_per_sec, settings.rate_ip_burst),
        per_device=Limits.limiter("requests per device", settings.rate_device_per_sec,
                                  settings.rate_device_burst),
        sends_per_user=Limits.limiter("messages per user", settings.rate_send_per_sec,
                                      settings.rate_send_burst),
        registrations_per_ip=Limits.limiter("registrations per address", settings.rate_register_per_sec,
                                            settings.rate_register_burst),
        logins_per_ip=Limits.limiter("logins per address", settings.rate_login_per_sec,
                                     settings.rate_login_burst),
        login_failures_per_user=Limits.limiter("failed logins per user", failures_per_sec,
                                               settings.login_max_failures),
        login_failures_per_ip=Limits.limiter("failed logins per address", failures_per_sec * 5,
                                             settings.login_max_failures * 5),
        max_connections_per_user=settings.max_connections_per_user,
    )


class Runtime:
    """Everything a node runs besides its HTTP server; ``close()`` releases it in reverse order."""

    def __init__(self, settings: Settings, service: MessagingService, embedded: EmbeddedMongo | None) -> None:
        self.settings = settings
        self.service = service
        self.embedded = embedded

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        embedded: EmbeddedMongo | None = None
        mongo_url = settings.mongo_url
        if not mongo_url:
            data = Path(settings.data_dir)
            embedded = EmbeddedMongo(
                data / "mongo", port=settings.embedded_mongo_port, log_path=data / "secantus.log",
                sync_on_commit=settings.journal,
            ).start()
            mongo_url = embedded.url
        topology: Topology | None = None
        try:
            hub = Hub()
            topology = topology_from(settings, hub)
            service = _service(settings, mongo_url, topology, hub)
            await service.start()
        except BaseException:
            if topology is not None:
                await topology.close()
            if embedded is not None:
                embedded.stop()
            raise
        where = "embedded SecantusDB" if embedded else "external MongoDB"
        log.info("store: %s, database %r", where, settings.mongo_db)
        log.info("topology: %s, login policy %s", topology, settings.login_policy)
        return cls(settings, service, embedded)

    async def close(self) -> None:
        await self.service.close()
        await self.service.store.close()
        if self.embedded is not None:
            self.embedded.stop()


def _service(settings: Settings, mongo_url: str, topology: Topology, hub: Hub) -> MessagingService:
    store = Store(
        mongo_url, settings.mongo_db, write_concern=settings.write_concern, journal=settings.journal,
        timeout_secs=settings.store_timeout_secs, max_idle_secs=settings.mongo_max_idle_secs,
    )
    secret = settings.jwt_secret or load_or_create_secret(
        settings.data_dir, "jwt_secret",
        protects="it signs access tokens; without it every token issued stops working (users sign in again)")
    tokens = TokenIssuer(secret, ttl_secs=settings.jwt_ttl_secs, issuer=settings.jwt_issuer,
                         old_secrets=settings.jwt_old_secret_list)
    metrics = Metrics()
    keys = keyring_from(settings, store.db[KEYS_COLLECTION])
    limits = limits_from(settings)
    users = UserStore(store)
    hasher = PasswordHasher(concurrency=settings.password_hash_concurrency,
                            max_waiting=settings.password_hash_queue)
    accounts = Accounts(users, tokens, limits, hasher)
    cache = InboxCache(max_entries=settings.inbox_cache_entries) if settings.inbox_cache_entries > 0 else None
    inboxes = Inboxes(
        store, topology.seq_allocator(store), device_idle_secs=settings.device_idle_secs,
        max_devices_per_user=settings.max_devices_per_user, cache=cache, cipher=keys,
        ack_linger_secs=settings.ack_linger_secs, trim_interval_secs=settings.trim_interval_secs,
    )
    conversations = Conversations(
        store, users, keys=keys, direct_policy=settings.direct_policy,
        max_group_members=settings.group_max_members, file_max_bytes=settings.file_max_bytes,
    )
    return MessagingService(
        store=store, topology=topology, hub=hub, accounts=accounts, inboxes=inboxes,
        conversations=conversations, limits=limits, metrics=metrics,
        webhooks=webhooks_from(settings, metrics),
        login_policy=settings.login_policy, commit_max_batch=settings.commit_max_batch,
        commit_max_in_flight=settings.commit_max_in_flight,
        admission=SendAdmission(max_wait_secs=settings.send_queue_max_wait_secs,
                                max_queued=settings.send_queue_max),
    )
