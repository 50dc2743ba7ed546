"""This node's listeners: which local connections and long-polls wait on which user's inbox.

The hub is fed by the bus (in-process or Redis) and only ever hands out a seq: a notify is a hint, the
listener pulls from the store. Listeners must not block: they record the seq and return.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Protocol

__all__ = ["Hub", "InboxListener"]

log = logging.getLogger(__name__)


class InboxListener(Protocol):
    """Something on this node that wants to know when a user's inbox moves (a socket, a long-poll)."""

    def inbox_changed(self, seq: int) -> None:
        """The inbox head is now at least ``seq``; ``seq`` 0 means "check, something may be new"."""


class Hub:
    def __init__(self) -> None:
        self._listeners: defaultdict[str, set[InboxListener]] = defaultdict(set)

    def add(self, user: str, listener: InboxListener) -> None:
        self._listeners[user].add(listener)

    def remove(self, user: str, listener: InboxListener) -> None:
        listeners = self._listeners.get(user)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[user]

    def deliver(self, user: str, seq: int) -> None:
        """Tell every local listener of ``user`` that the inbox reached ``seq``."""
        for listener in tuple(self._listeners.get(user, ())):
            try:
                listener.inbox_changed(seq)
            except Exception:
                log.exception("listener of %s failed on notify", user)

    def going_away(self) -> None:
        """The node is shutting down: ask every listener that can to end itself (sockets close with
        1001 so clients reconnect elsewhere; long-polls answer now)."""
        for listeners in tuple(self._listeners.values()):
            for listener in tuple(listeners):
                end = getattr(listener, "going_away", None)
                if end is not None:
                    try:
                        end()
                    except Exception:
                        log.exception("ending a listener at shutdown failed")

    def poke_all(self) -> None:
        """Make every listener re-check the store, e.g. after notifies may have been lost in an outage."""
        for user in tuple(self._listeners):
            self.deliver(user, 0)

    def is_local(self, user: str) -> bool:
        return user in self._listeners

    def local_users(self) -> list[str]:
        return list(self._listeners)

    def listener_count(self, user: str | None = None) -> int:
        if user is not None:
            return len(self._listeners.get(user, ()))
        return sum(len(v) for v in self._listeners.values())
