"""Which other nodes hold a user, remembered for a moment: the notify routing's presence lookups.

A batch's notifies go to the nodes holding its users (``HKEYS`` per user). Remembering the answer for
:data:`HOLDERS_CACHE_SECS` spares a lookup per user and batch. A stale answer never loses a notify:
a node the user left gets a message it ignores, and a node the user joined meanwhile hears the head on
the all-nodes channel (``im:heads``) and notifies its listeners from there (``Hub.deliver_unless_told``),
only without the entries, so that pull reads the store.
"""

from __future__ import annotations

from collections.abc import Sequence

from im.lru import LruDict

__all__ = ["HOLDERS_CACHE_SECS", "HolderCache"]

# How long a lookup's answer is used.
HOLDERS_CACHE_SECS = 2.0
# Users whose holders are remembered.
REMEMBERED_USERS = 100_000


class HolderCache:
    def __init__(self, *, ttl_secs: float = HOLDERS_CACHE_SECS) -> None:
        self._ttl_secs = ttl_secs
        self._known: LruDict[str, tuple[float, tuple[str, ...]]] = LruDict(REMEMBERED_USERS)

    def split(self, users: Sequence[str], now: float) -> tuple[dict[str, tuple[str, ...]], list[str]]:
        """``users`` as (holders known and fresh, users to look up)."""
        known: dict[str, tuple[str, ...]] = {}
        missing: list[str] = []
        for user in users:
            entry = self._known.get(user)
            if entry is not None and now - entry[0] < self._ttl_secs:
                known[user] = entry[1]
            else:
                missing.append(user)
        return known, missing

    def put(self, user: str, nodes: tuple[str, ...], now: float) -> None:
        self._known.put(user, (now, nodes))

    def clear(self) -> None:
        """Forget everything (after an outage: presence may have been rewritten)."""
        self._known.clear()
