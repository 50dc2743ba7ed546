"""Acknowledgements: device cursors, the inbox floor, and trimming what every active device holds.

Trimming raises the inbox floor; the archive keeps every message. Concurrent acks (of any users) are
written together: a batch costs the same few store round trips whatever its size (two reads, the
delivered receipts, one transaction).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from im.delivery.batching import NaturalBatcher
from im.delivery.parts import InboxParts
from im.delivery.trims import Ack, TrimSchedule
from im.errors import ImError, InvalidInput, Overloaded, StoreUnavailable
from im.models import AckResult
from im.storage.store import inbox_range, store_errors, utcnow

__all__ = ["AckWriter", "CursorState", "TrimHook", "TrimmedEntry", "trim_floor"]

log = logging.getLogger(__name__)

# Entries about to be trimmed are read in bounded pages of this many seqs (delivered receipts).
TRIM_READ_PAGE = 500
# Acknowledgements written together (one cursor bulk write, one floor bulk write per batch).
ACK_MAX_BATCH = 512
# Acknowledgements queued at most; beyond, one is refused (overloaded) and the device acks again later,
# which loses nothing (a cursor only moves forward), so the queue's memory stays bounded.
ACK_QUEUE_MAX = 50_000
# A single-device user's stored cursor is rewritten once it is this old (see ``_cursor_due``), or a
# tenth of the device idle time when that is shorter: staleness must not make an active device look idle.
CURSOR_REFRESH_SECS = 60.0


@dataclass(frozen=True, slots=True)
class CursorState:
    device: str
    seq: int
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class TrimmedEntry:
    """An inbox entry about to be trimmed: what a delivered receipt needs to know about it."""

    msg_id: str
    conv: str
    sender: str
    kind: str


# Called once per batch of acknowledgements with {user: entries about to be trimmed}, before they are
# trimmed; if it raises, nothing of the batch is trimmed (the acks hear why, the next ones try again).
TrimHook = Callable[[dict[str, list[TrimmedEntry]]], Awaitable[None]]


def trim_floor(cursors: Iterable[CursorState], *, now: datetime, idle_secs: float) -> int | None:
    """The highest seq every active device has acknowledged, or None when no device is active.

    A device that has not acked for ``idle_secs`` stops holding entries back: when it returns, its
    pull reports ``gap`` and it resyncs from history, instead of the inbox growing forever.
    """
    oldest_allowed = now - timedelta(seconds=idle_secs)
    active = [c.seq for c in cursors if c.seen_at >= oldest_allowed]
    return min(active) if active else None


@dataclass(slots=True)
class _AckPlan:
    """What one batch of acknowledgements writes."""

    latest: Mapping[tuple[str, str], Ack]
    floors: dict[str, int]  # stored floors, before this batch
    cursors: dict[tuple[str, str], int] = field(default_factory=dict)  # every device's cursor after it
    trims: dict[str, tuple[int, int]] = field(default_factory=dict)  # user -> (old floor, new floor]
    forget: list[str] = field(default_factory=list)  # cursor ids of devices beyond the cap
    cursor_writes: list[Ack] = field(default_factory=list)  # the acks whose cursors are written now

    def floor(self, user: str) -> int:
        trim = self.trims.get(user)
        return trim[1] if trim else self.floors.get(user, 0)


class AckWriter:
    def __init__(self, parts: InboxParts, *, device_idle_secs: float, max_devices_per_user: int,
                 linger_secs: float, trim_interval_secs: float) -> None:
        self._store = parts.store
        self._seqs = parts.seqs
        self._cache = parts.cache
        self._device_idle_secs = device_idle_secs
        self._max_devices = max_devices_per_user
        self._cursor_refresh = timedelta(seconds=min(CURSOR_REFRESH_SECS, device_idle_secs / 10))
        # Set by the receipts: writes delivered receipts for entries about to be trimmed.
        self.on_trim: TrimHook | None = None
        self._schedule = TrimSchedule(interval_secs=trim_interval_secs, on_due=self._trim_later)
        self._deferred_trims: set[asyncio.Task[AckResult]] = set()
        self._batcher: NaturalBatcher[Ack, AckResult] = NaturalBatcher(
            self._write_batch, max_batch=ACK_MAX_BATCH, what="acknowledgements",
            failure="the acknowledgement could not be stored; send it again", linger_secs=linger_secs,
        )

    @property
    def queued(self) -> int:
        return self._batcher.queued

    async def ack(self, user: str, device: str, *, upto: int, now: datetime | None = None) -> AckResult:
        """Record that ``device`` holds everything <= ``upto`` and trim what every active device holds."""
        self._check_room()
        return await self._batcher.submit(Ack(user, device, upto, now or utcnow()))

    def ack_nowait(self, user: str, device: str, *, upto: int) -> asyncio.Future[AckResult]:
        """:meth:`ack` queued at once; the future has its outcome (nothing needs to wait for it)."""
        try:
            self._check_room()
        except Overloaded as refused:
            future: asyncio.Future[AckResult] = asyncio.get_running_loop().create_future()
            future.set_exception(refused)
            return future
        return asyncio.ensure_future(self._batcher.enqueue(Ack(user, device, upto, utcnow())))

    def _check_room(self) -> None:
        if self._batcher.queued >= ACK_QUEUE_MAX:
            raise Overloaded(f"{self._batcher.queued} acknowledgements are waiting to be stored; ack again "
                             "shortly", retry_after_secs=1.0)

    async def settle(self, user: str) -> None:
        """Write every acknowledgement queued so far, and ``user``'s trim if the trim interval put it
        off: its delivered receipts are then written (a read receipt must not overtake them)."""
        if self._schedule.take_deferred(user):
            await self._batcher.submit(_deferred_trim(user))
        await self._batcher.drain()

    async def close(self) -> None:
        """Write every acknowledgement queued or held so far (shutdown); the trims of inboxes with held
        acks are done now, other deferred trims are dropped (the next ack of those inboxes trims them)."""
        held = self._schedule.stop()
        if held:
            await asyncio.gather(*(self._batcher.submit(_deferred_trim(user)) for user in held),
                                 return_exceptions=True)
        await self._batcher.drain()

    def _trim_later(self, user: str) -> None:
        task = asyncio.create_task(self._batcher.submit(_deferred_trim(user)))
        self._deferred_trims.add(task)
        task.add_done_callback(self._deferred_trim_done)

    def _deferred_trim_done(self, task: asyncio.Task[AckResult]) -> None:
        self._deferred_trims.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The next acknowledgement of that inbox trims it.
            log.warning("a deferred inbox trim failed: %s", task.exception())

    async def _write_batch(self, acks: list[Ack]) -> list[AckResult | ImError]:
        users = list(dict.fromkeys(a.user for a in acks if a.device is not None))
        heads = {user: head for user, (head, _) in (await self._seqs.heads(users)).items()}
        # An ack beyond the head known here may follow another node's write: the store decides.
        beyond = sorted({a.user for a in acks if a.device is not None and a.upto > heads.get(a.user, 0)})
        if beyond:
            fresh = await self._seqs.heads(beyond, fresh=True)
            heads.update({user: head for user, (head, _) in fresh.items()})
        outcomes: list[AckResult | ImError | None] = [None] * len(acks)
        # One cursor write per device: several acks of one device in a batch collapse to the highest.
        latest: dict[tuple[str, str], Ack] = {}
        retrims = [a.user for a in acks if a.device is None]
        for i, a in enumerate(acks):
            if a.device is None:
                continue
            head = heads.get(a.user, 0)
            if a.upto > head:
                outcomes[i] = InvalidInput(f"upto ({a.upto}) is beyond the inbox head ({head})", field="upto")
                continue
            latest[(a.user, a.device)] = a.merged(latest.get((a.user, a.device)))
        held: dict[tuple[str, str], AckResult] = {}
        for key, a in list(latest.items()):
            result = self._schedule.hold(a)
            if result is not None:
                held[key] = result
                del latest[key]
        # What was held for the inboxes written now goes with them.
        for user in {user for user, _ in latest} | set(retrims):
            for a in self._schedule.release(user):
                key = (user, a.device or "")
                latest[key] = a.merged(latest.get(key))
        plan = None
        failed: dict[str, ImError] = {}
        if latest or retrims:
            plan = await self._plan(latest, retrims)
            failed = await self._write(plan)
        for i, a in enumerate(acks):
            if outcomes[i] is not None:
                continue
            key = (a.user, a.device or "")
            if key in held:
                outcomes[i] = held[key]
            else:
                assert plan is not None
                cursor = plan.cursors.get(key, 0) if a.device is not None else 0
                outcomes[i] = failed.get(a.user) or AckResult(cursor=cursor, trimmed=plan.floor(a.user))
        return [o for o in outcomes if o is not None]

    async def _plan(self, latest: Mapping[tuple[str, str], Ack], retrims: Sequence[str]) -> _AckPlan:
        """The batch merged with the stored cursors and floors: what to write and what to trim."""
        store = self._store
        users = list(dict.fromkeys([*(user for user, _ in latest), *retrims]))
        async with store_errors("acknowledging"):
            docs = await store.cursors.find({"user": {"$in": users}}).to_list(
                len(users) * self._max_devices * 2)
            floors = {d["_id"]: d["trimmed"] async for d in store.trims.find({"_id": {"$in": users}})}
        devices: dict[str, dict[str, CursorState]] = {user: {} for user in users}
        for d in docs:
            devices[d["user"]][d["device"]] = CursorState(d["device"], d["seq"], d["seen_at"])
        stored_seen = {(d["user"], d["device"]): d["seen_at"] for d in docs}
        for (user, device), a in latest.items():
            stored = devices[user].get(device)
            devices[user][device] = CursorState(device, max(a.upto, stored.seq if stored else 0), a.now)
        plan = _AckPlan(latest=latest, floors=floors)
        forced = set(retrims)  # put off once already: due now whatever the interval says
        # Each user's latest ack time, in one pass over the batch (it is the "now" of its idle check).
        acked_at: dict[str, datetime] = {}
        for (user, _), a in latest.items():
            acked_at[user] = max(a.now, acked_at.get(user, a.now))
        for user, states in devices.items():
            by_recency = sorted(states.values(), key=lambda c: c.seen_at, reverse=True)
            kept, dropped = by_recency[:self._max_devices], by_recency[self._max_devices:]
            if dropped:
                log.info("user %s: forgetting %d least recently seen device cursor(s)", user, len(dropped))
                plan.forget.extend(f"{user}/{c.device}" for c in dropped)
            plan.cursors.update({(user, c.device): c.seq for c in states.values()})
            floor = trim_floor(kept, now=acked_at.get(user) or utcnow(), idle_secs=self._device_idle_secs)
            trimmed = floors.get(user, 0)
            if floor is not None and floor > trimmed and (user in forced or self._schedule.due(user)):
                plan.trims[user] = (trimmed, floor)
        plan.cursor_writes = [a for key, a in latest.items()
                              if self._cursor_due(a, plan, stored_seen.get(key), len(devices[a.user]))]
        return plan

    def _cursor_due(self, a: Ack, plan: _AckPlan, stored_seen_at: datetime | None, devices: int) -> bool:
        """Whether the batch writes ``a``'s cursor. It does unless the device is its user's only one, its
        stored cursor is recent, and the floor after the batch already covers the ack.

        Why: in that case the floor holds the same progress, and the cursor upsert is the costliest
        write per ack. A stale cursor is safe: it is never above what the device acknowledged, so it
        can only hold a floor back (when a second device appears, until this one acks again, which is
        then written). Its ``seen_at`` is refreshed every ``_cursor_refresh`` (at most a tenth of the
        device idle time), so a device in use never looks idle to the other devices' trims.
        """
        assert a.device is not None
        return (stored_seen_at is None or devices > 1 or a.now - stored_seen_at >= self._cursor_refresh
                or plan.floor(a.user) < plan.cursors[(a.user, a.device)])

    async def _write(self, plan: _AckPlan) -> dict[str, ImError]:
        """Delivered receipts first, then cursors and floors in one transaction.

        Returns the users whose receipts could not be written: nothing of theirs is trimmed (the next
        ack tries again), and their acks hear why.
        """
        failed: dict[str, ImError] = {}
        if self.on_trim is not None and plan.trims:
            # One hook call for the whole batch: its receipts share the committer's writes and a group
            # message's aggregate gets one update however many members' trims touched it.
            try:
                entries = await asyncio.gather(*(self._entries_to_trim(u, *r) for u, r in plan.trims.items()))
                await self.on_trim(dict(zip(plan.trims, entries, strict=True)))
            except Exception as exc:
                if not isinstance(exc, ImError):
                    log.error("delivered receipts of %d inboxes failed", len(plan.trims), exc_info=exc)
                error = exc if isinstance(exc, ImError) else StoreUnavailable(
                    "delivered receipts could not be written; acknowledge again")
                failed = dict.fromkeys(plan.trims, error)
                plan.trims.clear()
        store = self._store

        async def write(session: AsyncClientSession) -> None:
            if plan.cursor_writes:
                await store.cursors.bulk_write([
                    UpdateOne({"_id": f"{a.user}/{a.device}"},
                              {"$max": {"seq": a.upto},
                               "$set": {"user": a.user, "device": a.device, "seen_at": a.now}},
                              upsert=True)
                    for a in plan.cursor_writes
                ], ordered=False, session=session)
            if plan.forget:
                await store.cursors.delete_many({"_id": {"$in": plan.forget}}, session=session)
            if plan.trims:
                # Trimming is raising the floor: the entries stay in the archive, out of the inbox.
                await store.trims.bulk_write(
                    [UpdateOne({"_id": u}, {"$max": {"trimmed": high}}, upsert=True)
                     for u, (_, high) in plan.trims.items()], ordered=False, session=session)

        # One transaction: outside one the store commits (and syncs) every statement on its own.
        if plan.cursor_writes or plan.forget or plan.trims:
            await store.transaction("acknowledging", write)
        for user in {user for user, _ in plan.latest} | set(plan.trims):
            self._schedule.note_floor(user, plan.floor(user))
        if self._cache is not None:
            for user, (_, high) in plan.trims.items():
                self._cache.trimmed(user, high)
        return failed

    async def _entries_to_trim(self, user: str, low: int, high: int) -> list[TrimmedEntry]:
        cached = None if self._cache is None else self._cache.entries_between(user, low, high)
        if cached is not None:
            return [TrimmedEntry(m["msg_id"], m["conv"], m["from"], m["kind"]) for m in cached]
        entries: list[TrimmedEntry] = []
        projection = {"conv": 1, "from": 1, "kind": 1}
        for start in range(low, high, TRIM_READ_PAGE):
            end = min(start + TRIM_READ_PAGE, high)
            async with store_errors("reading entries to trim"):
                docs = await self._store.messages.find(
                    inbox_range(user, start, end), projection).to_list(end - start)
            entries.extend(TrimmedEntry(str(d["_id"]), d["conv"], d["from"], d["kind"]) for d in docs)
        return entries


def _deferred_trim(user: str) -> Ack:
    """The batch item that runs a trim the trim interval put off (no cursor of its own)."""
    return Ack(user, None, 0, utcnow())
