"""Who is online: the presence interface, and the one-node implementation.

A node's connections live in the hub's table (``im/delivery/hub.py``); presence publishes them. One
node: :class:`LocalPresence` reads the table itself. A cluster: ``im/cluster/redis_presence.py``
mirrors each node's counts to Redis. A user whose last connection closed lingers for ``linger_secs``
(a long-poll is between two requests most of the time it is "disconnected").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from im.delivery.hub import ConnectionTable

__all__ = ["LocalPresence", "OnlinePage", "Presence", "PresenceInfo", "linger_over"]

DEFAULT_LIMIT = 100


def linger_over(*, now: float, gone_at: float, linger_secs: float) -> bool:
    """A user without connections since ``gone_at`` may now be removed from presence."""
    return now - gone_at >= linger_secs



# -- values ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PresenceInfo:
    user: str
    connections: int
    nodes: tuple[str, ...] = ()

    @property
    def online(self) -> bool:
        return bool(self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "online": self.online, "connections": self.connections,
                "nodes": list(self.nodes)}


@dataclass(frozen=True, slots=True)
class OnlinePage:
    """One page of online users; pass ``next`` as ``after`` for the following page while ``more``."""

    users: list[PresenceInfo]
    more: bool
    next: str | None = None

    def to_dict(self) -> dict[str, Any]:
        last = self.next if self.next is not None else (self.users[-1].user if self.users else None)
        return {"users": [u.to_dict() for u in self.users], "next": last, "more": self.more}


class Presence(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def connected(self, user: str) -> None:
        """``user`` has a new connection in the hub's table: publish it (a first one waits, bounded)."""

    def disconnected(self, user: str) -> None:
        """``user`` lost a connection in the hub's table (synchronous: called from close callbacks)."""

    async def resync(self) -> None:
        """Rewrite everything this node holds (after Redis lost its data, e.g. a restart)."""

    async def lookup(self, user: str) -> PresenceInfo: ...

    async def online(self, *, after: str, limit: int) -> OnlinePage: ...


class LocalPresence:
    """Single-node presence: the connection table is the whole truth."""

    def __init__(self, table: ConnectionTable, *, node_id: str, linger_secs: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node_id = node_id
        self.linger_secs = linger_secs
        self.table = table
        self._clock = clock

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def connected(self, user: str) -> None:
        pass

    def disconnected(self, user: str) -> None:
        pass

    async def resync(self) -> None:
        pass

    def _info(self, user: str, now: float) -> PresenceInfo:
        count = self.table.count(user)
        gone = self.table.gone_at.get(user)
        if count == 0 and (gone is None or linger_over(now=now, gone_at=gone, linger_secs=self.linger_secs)):
            self.table.gone_at.pop(user, None)
            return PresenceInfo(user, 0)
        return PresenceInfo(user, count, (self.node_id,))

    async def lookup(self, user: str) -> PresenceInfo:
        return self._info(user, self._clock())

    async def online(self, *, after: str, limit: int) -> OnlinePage:
        now = self._clock()
        candidates = sorted(u for u in {*self.table.connections, *self.table.gone_at} if u > after)
        infos = [info for info in (self._info(u, now) for u in candidates) if info.online]
        return OnlinePage(infos[:limit], len(infos) > limit)
