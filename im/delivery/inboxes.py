"""Every user's inbox, as one object: append, pull, acknowledge.

How a seq is never allocated without its entry (no hole a puller could skip, no gap after a crash) is
the allocator's promise (``seqs.py``, from the heads of ``heads.py``); entries live in the archive
(``archive.py``); pulls are served from the tail cache when it can prove it has the range
(``cache.py``, ``reader.py``); acks move cursors and floors (``acks.py``, ``trims.py``). Every method
is safe to call concurrently and from several nodes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from im.cluster.news import InboxNews
from im.conversations.crypto import KeyRing
from im.delivery.acks import AckWriter, TrimHook
from im.delivery.cache import InboxCache
from im.delivery.joins import DeviceJoins
from im.delivery.parts import InboxParts
from im.delivery.reader import InboxReader
from im.delivery.seqs import Seqs
from im.delivery.writer import InboxWriter
from im.models import AckResult, Draft, PullResult, Receipt
from im.storage.store import Store

__all__ = ["Inboxes"]


class Inboxes:
    def __init__(self, store: Store, seqs: Seqs, *, device_idle_secs: float,
                 max_devices_per_user: int, cache: InboxCache | None = None, cipher: KeyRing | None = None,
                 ack_linger_secs: float = 0.0, trim_interval_secs: float = 0.0) -> None:
        self._seqs = seqs
        self._cache = cache
        parts = InboxParts(store, seqs, cache, cipher)
        self._writer = InboxWriter(parts)
        self._reader = InboxReader(parts)
        self._acks = AckWriter(parts, device_idle_secs=device_idle_secs,
                               max_devices_per_user=max_devices_per_user, linger_secs=ack_linger_secs,
                               trim_interval_secs=trim_interval_secs)
        # A joined device's seen_at needs refreshing only well within the idle time.
        self.joins = DeviceJoins(store, refresh_secs=device_idle_secs / 10)

    def on_trim(self, hook: TrimHook) -> None:
        """Call ``hook`` with the entries of each batch of trims, before they are trimmed."""
        self._acks.on_trim = hook

    async def close_acks(self) -> None:
        """Write every acknowledgement queued or held so far (shutdown, before the last sends)."""
        await self._acks.close()

    async def stop(self) -> None:
        """After the last write: leave the counters as the next writer needs them."""
        await self._seqs.stop()

    async def append(self, drafts: Sequence[Draft], *, news: InboxNews | None = None) -> list[Receipt]:
        """Store ``drafts`` and return their receipts; ``news`` collects what became durable (heads,
        epochs, entries) for the notifies."""
        return await self._writer.append(drafts, news=news)

    def learn(self, news: InboxNews) -> None:
        """Another node committed ``news``: its heads, and its entries for the tail cache."""
        book = self._seqs.book
        for user, head in news.heads.items():
            book.learn(user, head, news.epochs.get(user))
        self._seqs.others_write([*news.heads, *news.contested])
        if self._cache is not None:
            for user, messages in news.entries.items():
                epoch = news.epochs.get(user)
                if epoch is not None and messages:
                    self._cache.committed(user, epoch=epoch, messages=messages)

    async def pull(self, user: str, *, after: int, limit: int) -> PullResult:
        return await self._reader.pull(user, after=after, limit=limit)

    def pull_cached(self, user: str, *, after: int, limit: int) -> PullResult | None:
        return self._reader.pull_cached(user, after=after, limit=limit)

    async def head(self, user: str) -> int:
        return await self._reader.head(user)

    async def floor(self, user: str) -> int:
        """The highest seq trimmed from ``user``'s inbox (every active device acknowledged it)."""
        return await self._reader.floor(user)

    async def ack(self, user: str, device: str, *, upto: int, now: datetime | None = None) -> AckResult:
        return await self._acks.ack(user, device, upto=upto, now=now)

    def ack_nowait(self, user: str, device: str, *, upto: int) -> asyncio.Future[AckResult]:
        return self._acks.ack_nowait(user, device, upto=upto)

    @property
    def acks_queued(self) -> int:
        return self._acks.queued

    async def settle(self, user: str) -> None:
        await self._acks.settle(user)
