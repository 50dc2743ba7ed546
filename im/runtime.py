"""Wires the domain together from settings: store (embedded or external), auth, hub, bus, service."""

from __future__ import annotations

import logging
from pathlib import Path

from config import Settings
from im.auth import TokenIssuer
from im.bus import Bus, LocalBus
from im.embedded import EmbeddedMongo
from im.hub import Hub
from im.inbox import InboxStore
from im.ratelimit import Limits
from im.secrets_file import load_or_create_secret
from im.service import MessagingService
from im.store import Store

__all__ = ["Runtime"]

log = logging.getLogger(__name__)


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

    def __init__(self, settings: Settings, service: MessagingService, embedded: EmbeddedMongo | None) -> None:
        self.settings = settings
        self.service = service
        self.embedded = embedded

    @classmethod
    async def start(cls, settings: Settings, *, bus: Bus | None = None) -> Runtime:
        embedded: EmbeddedMongo | None = None
        mongo_url = settings.mongo_url
        if not mongo_url:
            data = Path(settings.data_dir)
            embedded = EmbeddedMongo(
                data / "mongo", port=settings.embedded_mongo_port, log_path=data / "secantus.log"
            ).start()
            mongo_url = embedded.url
        try:
            store = Store(
                mongo_url, settings.mongo_db, write_concern=settings.write_concern,
                journal=settings.journal, timeout_secs=settings.store_timeout_secs,
            )
            secret = settings.jwt_secret or load_or_create_secret(settings.data_dir, "jwt_secret")
            service = MessagingService(
                store=store,
                inbox=InboxStore(store, device_idle_secs=settings.device_idle_secs,
                                 max_devices_per_user=settings.max_devices_per_user),
                tokens=TokenIssuer(secret, ttl_secs=settings.jwt_ttl_secs, issuer=settings.jwt_issuer,
                                   old_secrets=settings.jwt_old_secret_list),
                hub=Hub(),
                bus=bus or LocalBus(),
                commit_max_batch=settings.commit_max_batch,
                limits=limits_from(settings),
            )
            await service.start()
        except BaseException:
            if embedded is not None:
                embedded.stop()
            raise
        where = "embedded SecantusDB" if embedded else "external MongoDB"
        log.info("store: %s, database %r", where, settings.mongo_db)
        return cls(settings, service, embedded)

    async def close(self) -> None:
        await self.service.close()
        await self.service.store.close()
        if self.embedded is not None:
            self.embedded.stop()
