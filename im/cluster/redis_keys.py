"""Names of every Redis key and channel of one cluster.

On a Redis Cluster, keys that one command or pipeline step reads together must live in one hash slot:
the node registry (each node's record, the set of nodes, each node's user set) is read with MGET and
written together, so its keys share the hash tag ``{nodes}``. A user's presence hash is read alone, so
presence spreads over every slot.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RedisKeys"]


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Names of every Redis key and channel of one cluster (``prefix`` lets clusters share a Redis)."""

    prefix: str = "im:"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}{{nodes}}:node:{node_id}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}{{nodes}}:all"

    def node_users(self, node_id: str) -> str:
        return f"{self.prefix}{{nodes}}:node:{node_id}:users"

    def presence(self, user: str) -> str:
        return f"{self.prefix}presence:{user}"

    def lease(self, user: str) -> str:
        """Which node may write ``user``'s inbox next (see ``im/delivery/leases.py``)."""
        return f"{self.prefix}lease:{user}"

    @property
    def channel_prefix(self) -> str:
        return f"{self.prefix}notify:"

    def channel(self, node_id: str) -> str:
        return self.channel_prefix + node_id

    @property
    def heads_channel(self) -> str:
        """Every node's channel for the heads any node wrote (writers learn them; no notify)."""
        return f"{self.prefix}heads"
