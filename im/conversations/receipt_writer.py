"""Delivered and read receipts to senders, written through the group commit like any message: durable,
ordered in the sender's inbox, notified."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from im.accounts.tokens import Principal
from im.conversations.read_markers import ReadMarkers
from im.conversations.receipts import (
    DELIVERED,
    READ,
    ReceiptStore,
    Touched,
    is_group_conversation,
    milestone_drafts,
    parse_msg_id,
    receipt_drafts,
    wants_receipt,
)
from im.delivery.acks import TrimmedEntry
from im.delivery.batching import GroupCommitter
from im.delivery.inboxes import Inboxes

__all__ = ["ReceiptWriter"]


class ReceiptWriter:
    def __init__(self, committer: GroupCommitter, inboxes: Inboxes, receipts: ReceiptStore,
                 markers: ReadMarkers) -> None:
        self._committer = committer
        self._inboxes = inboxes
        self._receipts = receipts
        self._markers = markers
        inboxes.on_trim(self.delivered)

    async def delivered(self, trimmed: dict[str, list[TrimmedEntry]]) -> None:
        """Before a batch of acknowledged entries is trimmed: delivered receipts to their senders."""
        by_reader = {
            reader: [Touched(e.msg_id, e.conv, e.sender) for e in entries
                     if wants_receipt(reader, sender=e.sender, kind=e.kind)]
            for reader, entries in trimmed.items()
        }
        await self._write(DELIVERED, {r: t for r, t in by_reader.items() if t})

    async def read(self, principal: Principal, msg_ids: Sequence[str]) -> list[str]:
        """``principal`` has read ``msg_ids``: read receipts to their senders. Returns the ids taken
        (messages not received, one's own, and group messages already read are skipped; repeating a
        read of the same ids stores nothing new)."""
        ids = [parse_msg_id(m, "msg_ids") for m in msg_ids]
        # Read implies delivered: acknowledgements still lingering go first, so a sender never sees a
        # message read before it is delivered.
        await self._inboxes.settle(principal.user)
        touched = await self._receipts.readable(principal.user, ids)
        if touched:
            await self._write(READ, {principal.user: touched})
            await self._markers.advance(principal.user, touched)
        return [t.msg_id for t in touched]

    async def _write(self, status: str, by_reader: dict[str, list[Touched]]) -> None:
        """One-to-one messages: an entry per reader to the sender. Group messages: the aggregate, and an
        entry to the sender when every recipient has reached the status (see ``receipts.py``)."""
        if not by_reader:
            return
        direct = {reader: [t for t in touched if not is_group_conversation(t.conv)]
                  for reader, touched in by_reader.items()}
        drafts = [d for reader, touched in direct.items() for d in receipt_drafts(reader, status, touched)]
        # Futures, not coroutines: gather would wrap each coroutine in a task of its own.
        await asyncio.gather(*(self._committer.enqueue(d) for d in drafts))
        reached = await self._receipts.record(status, by_reader)
        if reached:
            await asyncio.gather(*(self._committer.enqueue(d) for d in milestone_drafts(reached)))
