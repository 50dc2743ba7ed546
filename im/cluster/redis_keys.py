"""Names of every Redis key and channel of one cluster."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RedisKeys"]


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Names of every Redis key and channel of one cluster (``prefix`` lets clusters share a Redis)."""

    prefix: str = "im:"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    def node_users(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}:users"

    def presence(self, user: str) -> str:
        return f"{self.prefix}presence:{user}"

    @property
    def channel_prefix(self) -> str:
        return f"{self.prefix}notify:"

    def channel(self, node_id: str) -> str:
        return self.channel_prefix + node_id
