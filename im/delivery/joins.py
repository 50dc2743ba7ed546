"""Devices join their inbox from their first pull, poll or socket, not from their first ack.

Entries are trimmed below the lowest cursor of the user's active devices. A device that has pulled but
not acknowledged yet would otherwise hold nothing back: another device's ack could trim entries it
never got. Joining writes the device's cursor at the ``after`` it gave (never moving a cursor back) and
refreshes its ``seen_at``, before its first pull is answered; this node then remembers the device for
a refresh interval, so a device in use costs one write per interval, not one per pull.
"""

from __future__ import annotations

import time

from im.lru import LruDict
from im.storage.store import Store, store_errors, utcnow

__all__ = ["DeviceJoins"]

# Devices this node remembers as joined (beyond it a device joins again: one idempotent write).
JOINED_DEVICES = 100_000


class DeviceJoins:
    def __init__(self, store: Store, *, refresh_secs: float) -> None:
        self._cursors = store.cursors
        self._refresh_secs = refresh_secs
        self._joined: LruDict[tuple[str, str], float] = LruDict(JOINED_DEVICES)

    def joined(self, user: str, device: str) -> bool:
        """Whether the device's cursor is known to be active, from memory only."""
        at = self._joined.touch((user, device))
        return at is not None and time.monotonic() - at < self._refresh_secs

    async def join(self, user: str, device: str, *, after: int) -> None:
        """Make the device active at ``after`` (or its cursor, if higher): entries after it stay in the
        inbox until the device acknowledges them or goes idle."""
        if self.joined(user, device):
            return
        async with store_errors("joining a device to its inbox"):
            await self._cursors.update_one(
                {"_id": f"{user}/{device}"},
                {"$max": {"seq": max(after, 0)},
                 "$set": {"user": user, "device": device, "seen_at": utcnow()}},
                upsert=True)
        self._joined.put((user, device), time.monotonic())
