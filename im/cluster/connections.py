"""This node's clients: registering a socket or long-poll for notifies and presence, the per-user cap,
and the ``single`` login policy (a new connection kicks the user's older ones, on every node)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from im.cluster.presence import Presence
from im.delivery.hub import Hub, InboxListener
from im.errors import RateLimited

__all__ = ["KICK_REASON", "Connections", "RouteKickFn"]

log = logging.getLogger(__name__)

# Why a connection was closed by the `single` login policy (the `reason` of the kicked frame).
KICK_REASON = "logged_in_elsewhere"
# Asks the other nodes to kick a user's connections opened before a wall-clock time.
RouteKickFn = Callable[[str, float], Awaitable[None]]


class Connections:
    def __init__(self, hub: Hub, presence: Presence, *, route_kick: RouteKickFn, login_policy: str,
                 max_per_user: int) -> None:
        self._hub = hub
        self._presence = presence
        self._route_kick = route_kick
        self._login_policy = login_policy
        self._max_per_user = max_per_user

    async def attach(self, user: str, listener: InboxListener) -> None:
        """Register ``listener`` for notifies and presence (checked against the cap first); under the
        ``single`` policy, kick ``user``'s older connections here and on the other nodes."""
        self.check_cap(user)
        connected_at = self._hub.add(user, listener)
        await self._presence.connected(user)
        if self._login_policy == "single":
            self.kick_local(user, connected_at, keep=listener)
            await self._route_kick(user, connected_at)

    def check_cap(self, user: str) -> None:
        """Refuse a connection beyond the per-user cap of this node."""
        cap = self._max_per_user
        if cap and self._hub.listener_count(user) >= cap:
            raise RateLimited(f"user has {cap} connections open on this node already", retry_after_secs=5,
                              code="too_many_connections")

    def detach(self, user: str, listener: InboxListener) -> None:
        """Forget ``listener`` at once (called from synchronous close callbacks); presence is updated
        by its own writer, never awaited here."""
        if self._hub.remove(user, listener):
            self._presence.disconnected(user)

    def kick_local(self, user: str, before: float, *, keep: InboxListener | None = None) -> None:
        """Kick ``user``'s connections on this node opened before ``before`` (wall-clock seconds)."""
        for conn in self._hub.table.older_than(user, before, keep=keep):
            log.info("kicking an older connection of %s (login policy single)", user)
            try:
                conn.kick(KICK_REASON)
            except Exception:
                log.exception("kicking a connection of %s failed", user)
