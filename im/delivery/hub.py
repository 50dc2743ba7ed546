"""This node's connections: which sockets and long-polls wait on which user's inbox, since when.

The hub is fed by the bus (in-process or Redis) and only ever hands out a seq: a notify is a hint, the
listener pulls. Listeners must not block: they record the seq and return. The same table is what
presence reports and what the ``single`` login policy kicks from, so a connection is tracked once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["ConnectionTable", "Hub", "InboxListener"]

log = logging.getLogger(__name__)


class InboxListener(Protocol):
    """Something on this node that wants to know when a user's inbox moves (a socket, a long-poll)."""

    def inbox_changed(self, seq: int) -> None:
        """The inbox head is now at least ``seq``; ``seq`` 0 means "check, something may be new"."""

    def kick(self, reason: str) -> None:
        """Tell the client it was replaced by a newer session and end the connection."""


@dataclass
class ConnectionTable:
    """``user -> {listener: connected_at}`` (wall-clock seconds), plus when users with no connection
    left their last one (monotonic seconds: presence lingers them)."""

    connections: dict[str, dict[InboxListener, float]] = field(default_factory=dict)
    gone_at: dict[str, float] = field(default_factory=dict)

    def add(self, user: str, conn: InboxListener, *, wall: float) -> int:
        self.connections.setdefault(user, {})[conn] = wall
        self.gone_at.pop(user, None)
        return len(self.connections[user])

    def remove(self, user: str, conn: InboxListener, *, now: float) -> int | None:
        """Forget ``conn``; return the user's remaining count, or None if ``conn`` was not known."""
        conns = self.connections.get(user)
        if conns is None or conns.pop(conn, None) is None:
            return None
        if conns:
            return len(conns)
        del self.connections[user]
        self.gone_at[user] = now
        return 0

    def count(self, user: str) -> int:
        return len(self.connections.get(user, ()))

    def older_than(self, user: str, before: float, *,
                   keep: InboxListener | None = None) -> list[InboxListener]:
        return [c for c, at in self.connections.get(user, {}).items() if at < before and c is not keep]

    def users(self) -> list[str]:
        return list(self.connections)


class Hub:
    def __init__(self) -> None:
        self.table = ConnectionTable()
        # Per user with listeners here: the highest seq they were told (see deliver_unless_told).
        self._told: dict[str, int] = {}

    def add(self, user: str, listener: InboxListener) -> float:
        """Register ``listener``; return its wall-clock connect time (the login policy's order)."""
        wall = time.time()
        self.table.add(user, listener, wall=wall)
        return wall

    def remove(self, user: str, listener: InboxListener) -> bool:
        """Forget ``listener``; False if it was not registered."""
        left = self.table.remove(user, listener, now=time.monotonic())
        if left == 0:
            self._told.pop(user, None)
        return left is not None

    def deliver(self, user: str, seq: int) -> None:
        """Tell every local listener of ``user`` that the inbox reached ``seq``."""
        listeners = self.table.connections.get(user)
        if not listeners:
            return
        if seq > self._told.get(user, 0):
            self._told[user] = seq
        for listener in tuple(listeners):
            try:
                listener.inbox_changed(seq)
            except Exception:
                log.exception("listener of %s failed on notify", user)

    def deliver_unless_told(self, user: str, seq: int) -> None:
        """A head heard on the all-nodes channel: tell ``user``'s listeners here unless a routed notify
        (published before it) already did, as when the writer's routing did not know yet that the
        user is connected here."""
        if seq > self._told.get(user, 0) and user in self.table.connections:
            self.deliver(user, seq)

    def going_away(self) -> None:
        """The node is shutting down: ask every listener that can to end itself (sockets close with
        1001 so clients reconnect elsewhere; long-polls answer now)."""
        for listeners in tuple(self.table.connections.values()):
            for listener in tuple(listeners):
                end = getattr(listener, "going_away", None)
                if end is not None:
                    try:
                        end()
                    except Exception:
                        log.exception("ending a listener at shutdown failed")

    def poke_all(self) -> None:
        """Make every listener re-check the store, e.g. after notifies may have been lost in an outage."""
        for user in self.table.users():
            self.deliver(user, 0)

    def local_users(self) -> list[str]:
        return self.table.users()

    def listener_count(self, user: str | None = None) -> int:
        if user is not None:
            return self.table.count(user)
        return sum(len(v) for v in self.table.connections.values())
