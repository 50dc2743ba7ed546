"""Single-node bus: notifies go straight to this process's hub."""

from __future__ import annotations

from collections.abc import Mapping

from im.bus.base import DeliverFn

__all__ = ["LocalBus"]


class LocalBus:
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
