"""The bus: publish what a batch committed, deliver it to the hub of whichever node holds the user.

One node uses :class:`LocalBus` (straight to its own hub); a cluster uses ``im/cluster/redis_bus.py``.
Which one a node runs is decided once, by its topology (``im/topology.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from im.cluster.news import InboxNews

__all__ = ["Bus", "DeliverFn", "LearnFn", "LocalBus"]

# Tells this node's listeners of ``user`` that the inbox reached ``seq``.
DeliverFn = Callable[[str, int], None]
# Takes what another node committed (heads, epochs, entries) into this node's memory.
LearnFn = Callable[[InboxNews], None]


class Bus(Protocol):
    async def start(self, deliver: DeliverFn, learn: LearnFn | None = None) -> None:
        """Begin delivering notifies meant for this node to ``deliver(user, seq)``, after ``learn``
        took another node's news in."""

    async def publish(self, news: InboxNews) -> None:
        """Announce what a batch committed. Never raises: a notify is a hint."""

    async def close(self) -> None:
        """Stop delivering and release connections."""


class LocalBus:
    """Single-node bus: notifies go straight to this process's hub."""

    def __init__(self) -> None:
        self._deliver: DeliverFn | None = None

    async def start(self, deliver: DeliverFn, learn: LearnFn | None = None) -> None:
        self._deliver = deliver

    async def publish(self, news: InboxNews) -> None:
        if self._deliver is None:
            return
        for user, seq in news.heads.items():
            self._deliver(user, seq)

    async def close(self) -> None:
        self._deliver = None
