"""What this node knows of inbox heads, and when it may answer from that knowledge.

A head is learned from the store (the counter, then the archive's keys above it), from this node's own
writes, and, in a cluster, from the other nodes' notifies. A known head is never above the committed
one: only durable seqs are learned. It may be behind when another node wrote since; writers find out
from the unique inbox keys (a conflict), and readers trust a head only while ``trust_secs`` have not
passed since the store last confirmed it (a single node, the only writer, trusts it for good).

The heads this node advanced are saved to the counters every ``save_secs`` and at stop, in one write,
so a node that loads a head reads few keys above its counter.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from im.cluster.news import merge_heads
from im.delivery.counters import Head, head_from_keys, probe_heads, raise_counters, read_counters
from im.errors import StoreUnavailable
from im.lru import LruDict
from im.storage.store import Store

__all__ = ["KNOWN_HEADS", "HeadBook"]

log = logging.getLogger(__name__)

# Inbox heads kept in memory; one dropped is read again (counter, then keys) when next needed.
KNOWN_HEADS = 100_000


@dataclass(slots=True)
class _Known:
    head: int
    epoch: str
    confirmed_at: float  # monotonic time of the last store read that confirmed it


class HeadBook:
    def __init__(self, store: Store, *, save_secs: float, trust_secs: float = math.inf) -> None:
        self._store = store
        self._trust_secs = trust_secs
        self._known: LruDict[str, _Known] = LruDict(KNOWN_HEADS)
        self._unsaved: dict[str, int] = {}
        self._save_secs = save_secs
        self._save_timer: asyncio.TimerHandle | None = None
        self._saves: set[asyncio.Task[None]] = set()

    def trusted(self, user: str) -> Head | None:
        """``user``'s head when a reader may answer from memory, else None."""
        known = self._known.touch(user)
        if known is None or not self._confirmed(known, time.monotonic()):
            return None
        return known.head, known.epoch

    def _confirmed(self, known: _Known, now: float) -> bool:
        """Whether the store confirmed ``known`` recently enough for a reader to trust it."""
        return now - known.confirmed_at < self._trust_secs

    async def heads(self, users: Sequence[str], *, trusted_only: bool = True) -> dict[str, Head]:
        """The heads of ``users``: from memory when trusted (or, with ``trusted_only=False``, whenever
        known: a writer finds a stale head out by a conflict), the rest read from the store."""
        heads: dict[str, Head] = {}
        unknown: list[str] = []
        now = time.monotonic()
        for user in users:
            known = self._known.touch(user)
            if known is None or (trusted_only and not self._confirmed(known, now)):
                unknown.append(user)
            else:
                heads[user] = (known.head, known.epoch)
        if unknown:
            heads.update(await self.load(unknown))
        return heads

    async def load(self, users: Sequence[str]) -> dict[str, Head]:
        """Heads read from the store: each counter, then the archive's keys above it."""
        counters = await read_counters(self._store, users)
        start = {user: max(counters[user][0], self._head(user)) for user in users}
        found = await asyncio.gather(*(head_from_keys(self._store, u, start[u]) for u in users))
        now = time.monotonic()
        loaded = {user: (head, counters[user][1]) for user, head in zip(users, found, strict=True)}
        for user, (head, epoch) in loaded.items():
            self._known.put(user, _Known(head, epoch, now))
        return loaded

    async def refresh(self, heads: Mapping[str, int]) -> None:
        """Some of these heads proved stale (a seq after them was taken): read what the archive holds
        above each, in one query for all of them."""
        found = await probe_heads(self._store, heads)
        for user, head in found.items():
            self.learn(user, head)

    def _head(self, user: str) -> int:
        known = self._known.get(user)
        return 0 if known is None else known.head

    def learn(self, user: str, head: int, epoch: str | None = None, *, own: bool = False) -> None:
        """``head`` is committed (this node's write when ``own``: it saves it to the counter later)."""
        known = self._known.get(user)
        if known is not None and (epoch is None or epoch == known.epoch):
            if head > known.head:
                known.head = head
        elif epoch is not None:
            # Learned without a store read: known to writers, not trusted by readers until confirmed.
            self._known.put(user, _Known(head, epoch, -math.inf))
        if own and head > self._unsaved.get(user, 0):
            self._unsaved[user] = head
            self._schedule_save()

    def forget(self, users: Sequence[str]) -> None:
        for user in users:
            self._known.pop(user, None)

    def distrust_all(self) -> None:
        """Notifies may have been lost: readers go to the store again before trusting a head."""
        for known in self._known.values():
            known.confirmed_at = -math.inf

    def _schedule_save(self) -> None:
        if self._save_timer is None:
            self._save_timer = asyncio.get_running_loop().call_later(self._save_secs, self._save_soon)

    def _save_soon(self) -> None:
        self._save_timer = None
        task = asyncio.create_task(self._save())
        self._saves.add(task)
        task.add_done_callback(self._saves.discard)

    async def _save(self, *, stopping: bool = False) -> None:
        """One unordered ``$max`` for every head advanced since the last save. A failure keeps them for
        the next save (a counter behind is only slower to start from, never wrong)."""
        unsaved, self._unsaved = self._unsaved, {}
        if not unsaved:
            return
        try:
            await raise_counters(self._store, unsaved, "saving inbox heads")
        except StoreUnavailable as exc:
            log.warning("inbox heads not saved (%s); trying again", exc.message)
            merge_heads(self._unsaved, unsaved)
            if not stopping:
                self._schedule_save()

    async def stop(self) -> None:
        """Save every head this node advanced (after its last write)."""
        if self._save_timer is not None:
            self._save_timer.cancel()
            self._save_timer = None
        if self._saves:
            await asyncio.gather(*self._saves, return_exceptions=True)
        await self._save(stopping=True)
