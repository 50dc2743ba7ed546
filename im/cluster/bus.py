"""The bus: publish inbox heads, deliver them to the hub of whichever node holds the user.

One node uses :class:`LocalBus` (straight to its own hub); a cluster uses ``im/cluster/redis_bus.py``.
Which one a node runs is decided once, by its topology (``im/topology.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

__all__ = ["Bus", "DeliverFn", "LocalBus"]

DeliverFn = Callable[[str, int], None]


class Bus(Protocol):
    async def start(self, deliver: DeliverFn) -> None:
        """Begin delivering notifies meant for this node to ``deliver(user, seq)``."""

    async def publish(self, heads: Mapping[str, int]) -> None:
        """Announce that each user's inbox reached the given seq. Never raises: a notify is a hint."""

    async def close(self) -> None:
        """Stop delivering and release connections."""


class LocalBus:
    """Single-node bus: notifies go straight to this process's hub."""

    def __init__(self) -> None:
        self._deliver: DeliverFn | None = None

    async def start(self, deliver: DeliverFn) -> None:
        self._deliver = deliver

    async def publish(self, heads: Mapping[str, int]) -> None:
        if self._deliver is None:
            return
        for user, seq in heads.items():
            self._deliver(user, seq)

    async def close(self) -> None:
        self._deliver = None
