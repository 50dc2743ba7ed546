"""The bus interface: publish inbox heads, deliver them to the hub of whichever node holds the user."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

__all__ = ["Bus", "DeliverFn"]

DeliverFn = Callable[[str, int], None]


class Bus(Protocol):
    async def start(self, deliver: DeliverFn) -> None:
        """Begin delivering notifies meant for this node to ``deliver(user, seq)``."""

    async def publish(self, heads: Mapping[str, int]) -> None:
        """Announce that each user's inbox reached the given seq. Never raises: a notify is a hint."""

    async def close(self) -> None:
        """Stop delivering and release connections."""
