"""When an inbox may be trimmed: at most once per trim interval, with the acks in between held.

Each trim costs a floor write and one delivered receipt per sender, so under load a trim (and its
receipts) covers several acks instead of one each. An ack of an inbox trimmed less than the interval
ago is held in memory and written with that inbox's next trim, which is then scheduled; a held ack lost
in a crash only delays a trim (the device acks again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from im.lru import LruDict
from im.models import AckResult

__all__ = ["Ack", "TrimSchedule"]

# Inboxes whose last trim time and floor are remembered; older ones may trim at once, and a held ack of
# one reports floor 0 until its next write.
REMEMBERED_INBOXES = 100_000


@dataclass(frozen=True, slots=True)
class Ack:
    """One device's "I hold everything up to ``upto``", waiting for its batch. Without a device: a
    trim of ``user``'s inbox that was put off by the trim interval, due now."""

    user: str
    device: str | None
    upto: int
    now: datetime

    def merged(self, earlier: Ack | None) -> Ack:
        """Two acks of one device as one: the highest seq, the latest time."""
        if earlier is None:
            return self
        return Ack(self.user, self.device, max(self.upto, earlier.upto), max(self.now, earlier.now))


class TrimSchedule:
    """Trim times, held acks and deferred trims of this node's inboxes. ``on_due(user)`` is called when
    a deferred trim of ``user``'s inbox is due; it queues the trim with the acks."""

    def __init__(self, *, interval_secs: float, on_due: Callable[[str], None]) -> None:
        self._interval_secs = interval_secs
        self._on_due = on_due
        self._last_trim: LruDict[str, float] = LruDict(REMEMBERED_INBOXES)
        self._floors: LruDict[str, int] = LruDict(REMEMBERED_INBOXES)  # last written or read
        self._held: dict[str, dict[str, Ack]] = {}
        self._deferred: dict[str, asyncio.TimerHandle] = {}

    def hold(self, a: Ack) -> AckResult | None:
        """Hold ``a`` if its inbox was trimmed less than the interval ago (its cursor is then written with
        the inbox's next trim, scheduled here); None: write it now."""
        if self._interval_secs <= 0 or a.device is None:
            return None
        now = time.monotonic()
        last = self._last_trim.get(a.user)
        if last is None or now - last >= self._interval_secs:
            return None
        devices = self._held.setdefault(a.user, {})
        devices[a.device] = a.merged(devices.get(a.device))
        self._defer(a.user, last, now)
        return AckResult(cursor=devices[a.device].upto, trimmed=self._floors.get(a.user, 0))

    def release(self, user: str) -> list[Ack]:
        """The acks held for ``user``'s inbox, which go with the batch that writes it now."""
        return list(self._held.pop(user, {}).values())

    def due(self, user: str) -> bool:
        """Whether ``user``'s inbox may be trimmed now (and if so, note that it is). A trim put off by
        the interval is not forgotten: it is scheduled for when the interval ends."""
        if self._interval_secs <= 0:
            return True
        now = time.monotonic()
        last = self._last_trim.get(user)
        if last is not None and now - last < self._interval_secs:
            self._defer(user, last, now)
            return False
        self._last_trim.put(user, now)
        return True

    def note_floor(self, user: str, floor: int) -> None:
        self._floors.put(user, floor)

    def take_deferred(self, user: str) -> bool:
        """Cancel ``user``'s deferred trim, if one is scheduled: the caller runs it now."""
        handle = self._deferred.pop(user, None)
        if handle is None:
            return False
        handle.cancel()
        return True

    def stop(self) -> list[str]:
        """Cancel every deferred trim; return the inboxes with held acks (their trims must run now)."""
        for handle in self._deferred.values():
            handle.cancel()
        self._deferred.clear()
        return list(self._held)

    def _defer(self, user: str, last: float, now: float) -> None:
        if user not in self._deferred:
            self._deferred[user] = asyncio.get_running_loop().call_later(
                last + self._interval_secs - now, self._run_deferred, user)

    def _run_deferred(self, user: str) -> None:
        del self._deferred[user]
        self._on_due(user)
