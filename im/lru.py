"""A dict bounded by its number of keys, dropping the least recently used first.

Per-user memory of a node (known users, token versions, acknowledged cursors, trim times) must not grow
with the number of users ever seen; dropping an old key only costs a store read when it comes back.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

__all__ = ["LruDict"]

K = TypeVar("K")
V = TypeVar("V")


class LruDict(OrderedDict[K, V]):
    def __init__(self, max_size: int) -> None:
        super().__init__()
        self.max_size = max_size

    def put(self, key: K, value: V) -> None:
        """Set ``key`` as the most recently used; drop the least recently used beyond ``max_size``."""
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.max_size:
            self.popitem(last=False)

    def touch(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or None."""
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value
