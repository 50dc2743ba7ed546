"""How inbox seqs are allocated: the one choice that differs between one node and a cluster.

``SoleWriter`` (``sole_writer.py``): the node is the only writer, knows every head it touched, and
numbers a batch from them with no counter step. ``SharedWriter`` (``shared_writer.py``): several nodes
write, and claim seqs from the counters inside the transaction that archives the batch. The topology
(``im/topology.py``) picks one at start; nothing else asks which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from im.delivery.archive import Batch, Written
from im.delivery.counters import Head

__all__ = ["SeqAllocator"]


class SeqAllocator(Protocol):
    def known(self, user: str) -> Head | None:
        """``user``'s head and epoch when this node knows them for sure without the store, else None."""

    async def heads(self, users: Sequence[str]) -> dict[str, Head]:
        """The committed head and epoch of each inbox."""

    async def write(self, batch: Batch, per_inbox: Mapping[str, int]) -> Written:
        """Give the batch its seqs (``per_inbox[user]`` new ones per inbox) and archive it. Raises
        :class:`~im.delivery.archive.WriteAgain` with what was stored when only part of it was."""

    async def start(self) -> None:
        """Make the counters trustworthy for this writer before the first write."""

    async def stop(self) -> None:
        """After the last write: leave the counters as the next writer needs them."""
