"""Every user's inbox, as one object: append, pull, acknowledge.

How a seq is never allocated without its entry (no hole a puller could skip, no gap after a crash) is
the allocator's promise (``seqs.py``); entries live in the archive (``archive.py``); pulls are served
from the tail cache when it can prove it has the range (``cache.py``, ``reader.py``); acks move
cursors and floors (``acks.py``, ``trims.py``). Every method is safe to call concurrently and, with
the cluster's allocator, from several nodes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from im.conversations.crypto import KeyRing
from im.delivery.acks import AckWriter, TrimHook
from im.delivery.cache import InboxCache
from im.delivery.parts import InboxParts
from im.delivery.reader import InboxReader
from im.delivery.seqs import SeqAllocator
from im.delivery.writer import InboxWriter
from im.models import AckResult, Draft, PullResult, Receipt
from im.storage.store import Store

__all__ = ["Inboxes"]


class Inboxes:
    def __init__(self, store: Store, seqs: SeqAllocator, *, device_idle_secs: float,
                 max_devices_per_user: int, cache: InboxCache | None = None, cipher: KeyRing | None = None,
                 ack_linger_secs: float = 0.0, trim_interval_secs: float = 0.0) -> None:
        self._seqs = seqs
        parts = InboxParts(store, seqs, cache, cipher)
        self._writer = InboxWriter(parts)
        self._reader = InboxReader(parts)
        self._acks = AckWriter(parts, device_idle_secs=device_idle_secs,
                               max_devices_per_user=max_devices_per_user, linger_secs=ack_linger_secs,
                               trim_interval_secs=trim_interval_secs)

    def on_trim(self, hook: TrimHook) -> None:
        """Call ``hook`` with the entries of each batch of trims, before they are trimmed."""
        self._acks.on_trim = hook

    async def start(self) -> None:
        await self._seqs.start()

    async def close_acks(self) -> None:
        """Write every acknowledgement queued or held so far (shutdown, before the last sends)."""
        await self._acks.close()

    async def stop(self) -> None:
        """After the last write: leave the counters as the next writer needs them."""
        await self._seqs.stop()

    async def append(self, drafts: Sequence[Draft]) -> list[Receipt]:
        return await self._writer.append(drafts)

    async def pull(self, user: str, *, after: int, limit: int) -> PullResult:
        return await self._reader.pull(user, after=after, limit=limit)

    def pull_cached(self, user: str, *, after: int, limit: int) -> PullResult | None:
        return self._reader.pull_cached(user, after=after, limit=limit)

    async def head(self, user: str) -> int:
        return await self._reader.head(user)

    async def ack(self, user: str, device: str, *, upto: int, now: datetime | None = None) -> AckResult:
        return await self._acks.ack(user, device, upto=upto, now=now)

    def ack_nowait(self, user: str, device: str, *, upto: int) -> asyncio.Future[AckResult]:
        return self._acks.ack_nowait(user, device, upto=upto)

    @property
    def acks_queued(self) -> int:
        return self._acks.queued

    async def settle(self, user: str) -> None:
        await self._acks.settle(user)
