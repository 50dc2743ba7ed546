"""Per-user inboxes: atomic seq allocation with the write, bounded pulls, device cursors and trimming.

An inbox is an index over the archive, not a collection of its own: each archived message carries one
key per recipient, ``inbox_key(user, seq)``, in a unique multikey index. Why: a message is then one
document however many inboxes it enters (a one-to-one message used to cost an archive document and two
entry documents, and later two deletes), and trimming an inbox is moving its floor, not deleting
documents. The archive keeps every message anyway, so nothing is stored twice.

Why one transaction per batch: the counter ``$inc`` and the archive documents with their inbox keys
commit together. A seq is therefore never allocated without its entry (no hole a puller could skip, no
gap after a crash). Keys are never deleted, so the unique index also refuses a seq that was ever given:
a writer with a wrong idea of a head fails and reads the heads instead of reusing a seq. Many
concurrent sends share one transaction (see ``im/committer.py``), which is what makes the store's
per-write cost affordable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.read_concern import ReadConcern

from im.committer import NaturalBatcher
from im.crypto import KeyRing
from im.errors import ImError, InvalidInput, StoreUnavailable
from im.inbox_cache import InboxCache
from im.models import AckResult, Draft, PullResult, Receipt
from im.store import (
    INBOX_KEY_FIELD,
    Store,
    dedup_key,
    inbox_key,
    inbox_key_conflict,
    inbox_range,
    is_duplicate_key_only,
    new_epoch,
    store_errors,
    utcnow,
)

__all__ = ["CursorState", "InboxStore", "TrimHook", "TrimmedEntry", "trim_floor"]

log = logging.getLogger(__name__)

# A duplicate client_msg_id racing in from another node aborts the batch transaction; the batch is
# then re-checked and written again. More rounds than this means something else is wrong.
MAX_DEDUP_ROUNDS = 3
# Entries about to be trimmed are read in bounded pages of this many seqs (delivered receipts).
TRIM_READ_PAGE = 500
# Acknowledgements written together (one cursor bulk write, one trim bulk write per batch).
ACK_MAX_BATCH = 512
# Inboxes whose last trim time is remembered (for the trim interval); older ones may trim at once.
LAST_TRIM_USERS = 100_000


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class CursorState:
    device: str
    seq: int
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class _Ack:
    """One device's "I hold everything up to ``upto``", waiting for its batch. Without a device: a
    trim of ``user``'s inbox that was put off by the trim interval, due now."""

    user: str
    device: str | None
    upto: int
    now: datetime


def _deferred_trim(user: str) -> _Ack:
    """The batch item that runs a trim the trim interval put off (no cursor of its own)."""
    return _Ack(user, None, 0, utcnow())


@dataclass(slots=True)
class _AckPlan:
    """What one batch of acknowledgements writes."""

    latest: Mapping[tuple[str, str], _Ack]
    floors: dict[str, int]  # stored floors, before this batch
    cursors: dict[tuple[str, str], int] = field(default_factory=dict)  # every device's cursor after it
    trims: dict[str, tuple[int, int]] = field(default_factory=dict)  # user -> (old floor, new floor]
    forget: list[str] = field(default_factory=list)  # cursor ids of devices beyond the cap

    def floor(self, user: str) -> int:
        trim = self.trims.get(user)
        return trim[1] if trim else self.floors.get(user, 0)


@dataclass(frozen=True, slots=True)
class TrimmedEntry:
    """An inbox entry about to be trimmed: what a delivered receipt needs to know about it."""

    msg_id: str
    conv: str
    sender: str
    kind: str


# Called once per batch of acknowledgements with {user: entries about to be trimmed}, before they are
# deleted; if it raises, nothing of the batch is trimmed (the acks hear why, the next ones try again).
TrimHook = Callable[[dict[str, list[TrimmedEntry]]], Awaitable[None]]


def trim_floor(cursors: Iterable[CursorState], *, now: datetime, idle_secs: float) -> int | None:
    """The highest seq every active device has acknowledged, or None when no device is active.

    A device that has not acked for ``idle_secs`` stops holding entries back: when it returns, its
    pull reports ``gap`` and it resyncs from history, instead of the inbox growing forever.
    """
    oldest_allowed = now - timedelta(seconds=idle_secs)
    active = [c.seq for c in cursors if c.seen_at >= oldest_allowed]
    return min(active) if active else None


# What a pull reads of an archived message: its fields, and of its recipients only the reader.
def _entry_projection(user: str) -> dict[str, Any]:
    return {"conv": 1, "from": 1, "to": 1, "kind": 1, "body": 1, "cmid": 1, "ts": 1,
            "rcpt": {"$elemMatch": {"u": user}}}


def _entry_to_message(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An archived message as ``user``'s inbox entry (read with ``_entry_projection(user)``)."""
    return {
        "seq": doc["rcpt"][0]["s"],
        "msg_id": str(doc["_id"]),
        "conv": doc["conv"],
        "from": doc["from"],
        "to": doc["to"],
        "kind": doc["kind"],
        "body": doc["body"],
        "client_msg_id": doc["cmid"],
        "ts": _ms(doc["ts"]),
    }


def _receipt_from_archive(doc: Mapping[str, Any], *, duplicate: bool) -> Receipt:
    return Receipt(
        msg_id=str(doc["_id"]),
        client_msg_id=doc["cmid"],
        conv=doc["conv"],
        to=doc["to"],
        ts=_ms(doc["ts"]),
        seqs={r["u"]: r["s"] for r in doc["rcpt"]},
        duplicate=duplicate,
    )


class InboxStore:
    """Reads and writes inboxes. Every method is safe to call concurrently and from several nodes."""

    def __init__(self, store: Store, *, device_idle_secs: float, max_devices_per_user: int,
                 cipher: KeyRing | None = None, cache: InboxCache | None = None,
                 ack_linger_secs: float = 0.0, trim_interval_secs: float = 0.0) -> None:
        self._store = store
        self._device_idle_secs = device_idle_secs
        self._max_devices = max_devices_per_user
        # Encryption at rest of bodies (archive and inbox); None stores them in clear.
        self.cipher = cipher
        # The newest committed entries (and, on a single node, the heads) kept in memory for pulls.
        self.cache = cache
        # Set by the service: writes delivered receipts for entries about to be trimmed.
        self.on_trim: TrimHook | None = None
        # An inbox is trimmed at most this often: each trim costs a delete and one delivered receipt per
        # sender, so under load trims (and receipts) cover several acks instead of one each.
        self._trim_interval_secs = trim_interval_secs
        self._last_trim: OrderedDict[str, float] = OrderedDict()
        self._retrims: dict[str, asyncio.TimerHandle] = {}
        self._retrim_tasks: set[asyncio.Task[AckResult]] = set()
        # Concurrent acks share their store round trips, like sends share a transaction.
        self._acks: NaturalBatcher[_Ack, AckResult] = NaturalBatcher(
            self._ack_batch, max_batch=ACK_MAX_BATCH, what="acknowledgements",
            failure="the acknowledgement could not be stored; send it again", linger_secs=ack_linger_secs,
        )

    # -- write ----------------------------------------------------------------------------------------

    async def append(self, drafts: Sequence[Draft]) -> list[Receipt]:
        """Durably store ``drafts`` (archived with one inbox key per recipient) and return their receipts.

        Receipts are in the order of ``drafts``. A draft whose (sender, client_msg_id) was stored before,
        or earlier in the same batch, gets the original receipt with ``duplicate=True`` and stores nothing.
        """
        receipts: dict[tuple[str, str], Receipt] = {}
        for round_ in range(MAX_DEDUP_ROUNDS):
            # Optimistic: the first round writes without looking for stored duplicates (retries are rare
            # and the unique index catches them); only after a rejection are the stored receipts read.
            if round_ > 0:
                pending = [d for d in drafts if d.dedup_key not in receipts]
                receipts.update(await self._stored_receipts(pending))
            fresh: dict[tuple[str, str], Draft] = {}
            for draft in drafts:
                if draft.dedup_key not in receipts:
                    fresh.setdefault(draft.dedup_key, draft)
            if not fresh:
                break
            try:
                receipts.update(await self._write_batch(list(fresh.values())))
                break
            except BulkWriteError as exc:
                if not is_duplicate_key_only(exc):
                    raise
                log.info("duplicate client_msg_id raced in; re-checking a batch of %d", len(fresh))
        else:
            raise DuplicateKeyError("could not settle duplicate client_msg_ids")
        out: list[Receipt] = []
        first_of: set[tuple[str, str]] = set()
        for draft in drafts:
            receipt = receipts[draft.dedup_key]
            if not receipt.duplicate and draft.dedup_key in first_of:
                receipt = _with_duplicate(receipt)
            first_of.add(draft.dedup_key)
            out.append(receipt)
        return out

    async def _stored_receipts(self, drafts: Sequence[Draft]) -> dict[tuple[str, str], Receipt]:
        if not drafts:
            return {}
        keys = list({dedup_key(*d.dedup_key) for d in drafts})
        async with store_errors("checking for duplicate sends"):
            docs = await self._store.messages.find({"dk": {"$in": keys}}).to_list(len(keys))
        return {(doc["from"], doc["cmid"]): _receipt_from_archive(doc, duplicate=True) for doc in docs}

    async def _write_batch(self, drafts: list[Draft]) -> dict[tuple[str, str], Receipt]:
        store = self._store
        per_inbox = Counter(user for draft in drafts for user in draft.recipients)
        now = utcnow()
        msg_ids = [ObjectId() for _ in drafts]
        # Sealed outside the transaction: a conversation's first message creates its data key.
        cipher = self.cipher
        bodies = [d.body if cipher is None else await cipher.seal(d.conv, d.body) for d in drafts]

        async def write(session: AsyncClientSession) -> tuple[dict[tuple[str, str], Receipt], dict[str, str]]:
            heads, epochs = await _claim_seqs(store, per_inbox, session, known)
            next_seq = {user: heads[user] - n + 1 for user, n in per_inbox.items()}
            archive: list[dict[str, Any]] = []
            receipts: dict[tuple[str, str], Receipt] = {}
            for draft, msg_id, body in zip(drafts, msg_ids, bodies, strict=True):
                seqs: dict[str, int] = {}
                for user in draft.recipients:
                    seqs[user] = next_seq[user]
                    next_seq[user] += 1
                archive.append({
                    "_id": msg_id, "conv": draft.conv, "from": draft.sender, "to": draft.to,
                    "kind": draft.kind, "body": body, "cmid": draft.client_msg_id, "ts": now,
                    "dk": dedup_key(*draft.dedup_key), "rcpt": [{"u": u, "s": s} for u, s in seqs.items()],
                    INBOX_KEY_FIELD: [inbox_key(u, s) for u, s in seqs.items()],
                })
                receipts[draft.dedup_key] = Receipt(
                    msg_id=str(msg_id), client_msg_id=draft.client_msg_id, conv=draft.conv, to=draft.to,
                    ts=_ms(now), seqs=seqs,
                )
            try:
                await store.messages.insert_many(archive, ordered=True, session=session)
            except BulkWriteError as exc:
                if inbox_key_conflict(exc):
                    raise StaleHeads from None  # a seq we gave is taken: the heads we knew were old
                raise
            return receipts, epochs

        # Heads this node knows for sure (single node) are not read, only checked (see _claim_seqs).
        known = {}
        if self.cache is not None:
            known = {user: head for user in per_inbox if (head := self.cache.head(user)) is not None}
        # A commit whose outcome is unknown at the deadline is safe: the retry finds it by client_msg_id.
        try:
            receipts, epochs = await self._transaction("storing messages", write)
        except StaleHeads:
            if not known:
                raise _heads_disagree(per_inbox) from None
            log.warning("inbox heads of a batch were not the cached ones; reading them (another writer?)")
            assert self.cache is not None
            for user in known:
                self.cache.forget(user)
            known = {}
            try:
                receipts, epochs = await self._transaction("storing messages", write)
            except StaleHeads:
                raise _heads_disagree(per_inbox) from None
        if self.cache is not None:
            self._cache_committed(drafts, receipts, epochs)
        return receipts

    def _cache_committed(self, drafts: Sequence[Draft], receipts: Mapping[tuple[str, str], Receipt],
                         epochs: Mapping[str, str]) -> None:
        """The batch is durable: keep its entries (bodies in clear) for the recipients' pulls."""
        assert self.cache is not None
        per_user: dict[str, list[dict[str, Any]]] = {}
        for draft in drafts:
            receipt = receipts[draft.dedup_key]
            for user, seq in receipt.seqs.items():
                per_user.setdefault(user, []).append({
                    "seq": seq, "msg_id": receipt.msg_id, "conv": draft.conv, "from": draft.sender,
                    "to": draft.to, "kind": draft.kind, "body": draft.body,
                    "client_msg_id": draft.client_msg_id, "ts": receipt.ts,
                })
        for user, messages in per_user.items():
            # The transaction read the counter: the last seq it gave this inbox is the head at commit.
            self.cache.committed(user, epoch=epochs[user], head=messages[-1]["seq"], messages=messages)

    # -- read -----------------------------------------------------------------------------------------

    async def _head_and_epoch(self, user: str) -> tuple[int, str]:
        async with store_errors("reading an inbox head"):
            doc = await self._store.counters.find_one({"_id": user})
        if doc is None:
            # A user created before counters existed; an upsert gives it an epoch that then stays.
            async with store_errors("creating an inbox"):
                await self._store.counters.update_one(
                    {"_id": user}, {"$setOnInsert": {"seq": 0, "epoch": new_epoch()}}, upsert=True,
                )
                doc = await self._store.counters.find_one({"_id": user})
        assert doc is not None
        return doc["seq"], doc["epoch"]

    async def _trimmed(self, user: str) -> int:
        """The inbox floor: every entry <= it was trimmed (every active device holds it). Kept apart from
        the counter on purpose: the counter is written only by send transactions, so acks never conflict
        with them (a floor kept in the counter made every ack collide with the group-commit transaction
        under load)."""
        async with store_errors("reading an inbox floor"):
            doc = await self._store.trims.find_one({"_id": user})
        return 0 if doc is None else doc["trimmed"]

    async def pull(self, user: str, *, after: int, limit: int) -> PullResult:
        """Up to ``limit`` entries with seq > ``after``, in seq order.

        The range is bounded on both sides by the counter (SecantusDB reads every match before limiting).
        A device behind the floor (it was idle while the others acknowledged) gets ``gap``: it should
        reload history, then go on from the floor. The floor and the range are read together; the floor
        only rises, and trimming deletes nothing, so a range read before a trim is still whole.
        """
        cache = self.cache
        known = None if cache is None else cache.head(user)
        if known is not None:
            head, epoch = known
        else:
            head, epoch = await self._head_and_epoch(user)
            if cache is not None:
                cache.loaded(user, head=head, epoch=epoch)
        if cache is not None:
            page = cache.serve(user, after=after, limit=limit, head=head, epoch=epoch)
            if page is not None:
                return page
        if after > head:
            floor, docs = await self._trimmed(user), []
        else:
            floor, docs = await asyncio.gather(
                self._trimmed(user), self._range(user, after, min(after + limit, head)))
        gap = after > head or after < floor
        start = floor if gap else after
        if start != after:
            docs = await self._range(user, start, min(start + limit, head))
        end = min(start + limit, head)
        if end <= start:
            return PullResult(messages=[], next=start, head=head, epoch=epoch, gap=gap, more=False)
        messages = [_entry_to_message(d) for d in docs]
        messages.sort(key=lambda m: m["seq"])
        if self.cipher is not None:
            for message in messages:
                message["body"] = await self.cipher.open(message["conv"], message["body"])
        if cache is not None:
            cache.committed(user, epoch=epoch, head=head, messages=messages)
        return PullResult(messages=messages, next=end, head=head, epoch=epoch, gap=gap, more=end < head)

    def pull_cached(self, user: str, *, after: int, limit: int) -> PullResult | None:
        """What :meth:`pull` returns, when this node knows the head for sure (the only writer) and holds
        every entry of the page in memory; else None (the store must answer)."""
        cache = self.cache
        known = None if cache is None else cache.head(user)
        if known is None:
            return None
        assert cache is not None
        head, epoch = known
        return cache.serve(user, after=after, limit=limit, head=head, epoch=epoch)

    async def _range(self, user: str, start: int, end: int) -> list[dict[str, Any]]:
        """The archived messages of ``user``'s inbox with seq in (start, end], in no particular order."""
        if end <= start:
            return []
        async with store_errors("pulling an inbox"):
            return await self._store.messages.find(
                inbox_range(user, start, end), _entry_projection(user)).to_list(end - start)

    # -- acknowledge and trim -------------------------------------------------------------------------

    async def ack(self, user: str, device: str, *, upto: int, now: datetime | None = None) -> AckResult:
        """Record that ``device`` holds everything <= ``upto`` and trim what every active device holds.

        Trimming raises the inbox floor; the archive keeps every message. Concurrent acks (of any users)
        are written together: a batch costs the same few store round trips whatever its size.
        """
        return await self._acks.submit(_Ack(user, device, upto, now or utcnow()))

    def ack_nowait(self, user: str, device: str, *, upto: int) -> asyncio.Future[AckResult]:
        """:meth:`ack` queued at once; the future has its outcome (nothing needs to wait for it)."""
        return asyncio.ensure_future(self._acks.enqueue(_Ack(user, device, upto, utcnow())))

    @property
    def acks_queued(self) -> int:
        return self._acks.queued

    async def settle(self, user: str) -> None:
        """Write every acknowledgement queued so far, and ``user``'s trim if the trim interval put it
        off: its delivered receipts are then written (a read receipt must not overtake them)."""
        handle = self._retrims.pop(user, None)
        if handle is not None:
            handle.cancel()
            await self._acks.submit(_deferred_trim(user))
        await self._acks.drain()

    async def close(self) -> None:
        """Write every acknowledgement queued so far (shutdown). Trims put off by the trim interval are
        dropped: the next acknowledgement of those inboxes trims them."""
        for handle in self._retrims.values():
            handle.cancel()
        self._retrims.clear()
        await self._acks.drain()

    async def _heads(self, users: Sequence[str]) -> dict[str, int]:
        """Inbox heads: from the cache when it knows them, the rest in one read."""
        heads: dict[str, int] = {}
        unknown: list[str] = []
        for user in users:
            known = None if self.cache is None else self.cache.head(user)
            if known is None:
                unknown.append(user)
            else:
                heads[user] = known[0]
        if unknown:
            async with store_errors("reading inbox heads"):
                async for doc in self._store.counters.find({"_id": {"$in": unknown}}, {"seq": 1, "epoch": 1}):
                    heads[doc["_id"]] = doc["seq"]
                    if self.cache is not None:
                        self.cache.loaded(doc["_id"], head=doc["seq"], epoch=doc["epoch"])
        return heads

    async def _ack_batch(self, acks: list[_Ack]) -> list[AckResult | ImError]:
        """Write a batch of acknowledgements: two reads, the delivered receipts, then one transaction.

        Why one transaction: outside a transaction the store commits (and, durable, syncs) every
        statement on its own, so a batch of a hundred cursor upserts cost a hundred syncs; together
        with the floors and the deletes it now costs one.
        """
        heads = await self._heads(list(dict.fromkeys(a.user for a in acks if a.device is not None)))
        outcomes: list[AckResult | ImError | None] = [None] * len(acks)
        # One cursor write per device: several acks of one device in a batch collapse to the highest.
        latest: dict[tuple[str, str], _Ack] = {}
        retrims = [a.user for a in acks if a.device is None]
        for i, a in enumerate(acks):
            if a.device is None:
                continue
            head = heads.get(a.user, 0)
            if a.upto > head:
                outcomes[i] = InvalidInput(f"upto ({a.upto}) is beyond the inbox head ({head})", field="upto")
                continue
            seen = latest.get((a.user, a.device))
            latest[(a.user, a.device)] = a if seen is None else _Ack(
                a.user, a.device, max(a.upto, seen.upto), max(a.now, seen.now))
        if latest or retrims:
            plan = await self._plan_acks(latest, retrims)
            failed = await self._write_acks(plan)
            for i, a in enumerate(acks):
                if outcomes[i] is None:
                    cursor = plan.cursors.get((a.user, a.device), 0) if a.device is not None else 0
                    outcomes[i] = failed.get(a.user) or AckResult(cursor=cursor, trimmed=plan.floor(a.user))
        return [o for o in outcomes if o is not None]

    async def _plan_acks(self, latest: Mapping[tuple[str, str], _Ack], retrims: Sequence[str]) -> _AckPlan:
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
            if floor is not None and floor > trimmed and (user in forced or self._trim_due(user)):
                plan.trims[user] = (trimmed, floor)
        return plan

    def _trim_due(self, user: str) -> bool:
        """Whether ``user``'s inbox may be trimmed now (and if so, note that it is). A trim put off by
        the interval is not forgotten: it is scheduled for when the interval ends."""
        if self._trim_interval_secs <= 0:
            return True
        now = time.monotonic()
        last = self._last_trim.get(user)
        if last is not None and now - last < self._trim_interval_secs:
            if user not in self._retrims:
                self._retrims[user] = asyncio.get_running_loop().call_later(
                    last + self._trim_interval_secs - now, self._retrim, user)
            return False
        self._last_trim[user] = now
        self._last_trim.move_to_end(user)
        if len(self._last_trim) > LAST_TRIM_USERS:
            self._last_trim.popitem(last=False)
        return True

    def _retrim(self, user: str) -> None:
        del self._retrims[user]
        task = asyncio.create_task(self._acks.submit(_deferred_trim(user)))
        self._retrim_tasks.add(task)
        task.add_done_callback(self._retrim_done)

    def _retrim_done(self, task: asyncio.Task[AckResult]) -> None:
        self._retrim_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The next acknowledgement of that inbox trims it.
            log.warning("a deferred inbox trim failed: %s", task.exception())

    async def _write_acks(self, plan: _AckPlan) -> dict[str, ImError]:
        """Delivered receipts first, then cursors and floors in one transaction.

        Returns the users whose receipts could not be written: nothing of theirs is trimmed (the next
        ack tries again), and their acks hear why.
        """
        failed: dict[str, ImError] = {}
        if self.on_trim is not None and plan.trims:
            # One hook call for the whole batch: its receipts share the committer's transactions and
            # a group message's aggregate gets one update however many members' trims touched it.
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
            if plan.latest:
                await store.cursors.bulk_write([
                    UpdateOne({"_id": f"{a.user}/{a.device}"},
                              {"$max": {"seq": a.upto},
                               "$set": {"user": a.user, "device": a.device, "seen_at": a.now}},
                              upsert=True)
                    for a in plan.latest.values()
                ], ordered=False, session=session)
            if plan.forget:
                await store.cursors.delete_many({"_id": {"$in": plan.forget}}, session=session)
            if plan.trims:
                # Trimming is raising the floor: the entries stay in the archive, out of the inbox.
                await store.trims.bulk_write(
                    [UpdateOne({"_id": u}, {"$max": {"trimmed": high}}, upsert=True)
                     for u, (_, high) in plan.trims.items()], ordered=False, session=session)

        if plan.latest or plan.trims:
            await self._transaction("acknowledging", write)
        if self.cache is not None:
            for user, (_, high) in plan.trims.items():
                self.cache.trimmed(user, high)
        return failed

    async def _transaction(self, what: str, write: Callable[[AsyncClientSession], Awaitable[Any]]) -> Any:
        """Run ``write`` in one transaction with the store's write concern, bounded in time.

        with_transaction retries transient errors for up to 120 s on its own; the bound makes a store
        outage reach the caller promptly as "unavailable" (and a retry is always safe: sends are
        idempotent by client_msg_id, cursors and floors only move forward).
        """
        store = self._store
        async with store_errors(what), store.client.start_session() as session:
            with pymongo.timeout(store.timeout_secs):
                return await session.with_transaction(
                    write, read_concern=ReadConcern("local"), write_concern=store.write_concern
                )

    async def _entries_to_trim(self, user: str, low: int, high: int) -> list[TrimmedEntry]:
        cached = None if self.cache is None else self.cache.entries_between(user, low, high)
        if cached is not None:
            return [TrimmedEntry(m["msg_id"], m["conv"], m["from"], m["kind"]) for m in cached]
        return await self._entries_between(user, low, high)

    async def _entries_between(self, user: str, low: int, high: int) -> list[TrimmedEntry]:
        """The entries with seq in (low, high], read in pages bounded on both sides."""
        entries: list[TrimmedEntry] = []
        projection = {"conv": 1, "from": 1, "kind": 1}
        for start in range(low, high, TRIM_READ_PAGE):
            end = min(start + TRIM_READ_PAGE, high)
            async with store_errors("reading entries to trim"):
                docs = await self._store.messages.find(
                    inbox_range(user, start, end), projection).to_list(end - start)
            entries.extend(TrimmedEntry(str(d["_id"]), d["conv"], d["from"], d["kind"]) for d in docs)
        return entries

def _with_duplicate(receipt: Receipt) -> Receipt:
    return Receipt(
        msg_id=receipt.msg_id, client_msg_id=receipt.client_msg_id, conv=receipt.conv, to=receipt.to,
        ts=receipt.ts, seqs=receipt.seqs, duplicate=True,
    )


def _heads_disagree(per_inbox: Mapping[str, int]) -> StoreUnavailable:
    """Seqs read from the counters under their lock were taken anyway: counters and inbox keys
    disagree (a counter restored or recreated apart from the archive). Nothing is written, and the
    sends fail, rather than a seq being given twice."""
    log.error("inbox counters are behind the archive's inbox keys for some of %s; refusing to write",
              sorted(per_inbox)[:10])
    return StoreUnavailable("the message store's inbox counters disagree with its archive; retry later")


class StaleHeads(Exception):
    """A guessed inbox head was not the stored one: the batch is written again, reading the heads."""


async def _claim_seqs(store: Store, per_inbox: Mapping[str, int], session: AsyncClientSession,
                      known: Mapping[str, tuple[int, str]]) -> tuple[dict[str, int], dict[str, str]]:
    """Claim a block of seqs in every inbox of the batch and return the new heads and the epochs.

    ``known`` holds (head, epoch) of inboxes whose head this node knows (a single node is the only
    writer): their counters are advanced by a plain ``$inc`` and never read. Measured on SecantusDB, a
    read of 400 counters by ``$in`` costs more than the 400 updates (131 vs 85 ms), per-inbox
    ``UpdateOne``s cost half of one ``update_many`` over ``$in``, and a ``$inc`` conditional on the
    guessed seq costs 0.37 ms against 0.22 ms. The condition is not needed: were a guess wrong (another
    writer, a misconfiguration), the guessed seqs are taken, the archive's unique inbox keys refuse
    them, and :class:`StaleHeads` aborts the transaction (counter steps included); the caller then
    writes the batch again without guesses.

    The other heads are read inside the transaction that holds the counters' write locks, so they are
    ours. Registration creates every counter; the upsert is only for an inbox without one (a user
    created before counters existed), created here in the same transaction.
    """
    heads: dict[str, int] = {}
    epochs: dict[str, str] = {}
    guessed = [user for user in per_inbox if user in known]
    if guessed:
        result = await store.counters.bulk_write(
            [UpdateOne({"_id": user}, {"$inc": {"seq": per_inbox[user]}}) for user in guessed],
            ordered=False, session=session)
        if result.matched_count != len(guessed):
            raise StaleHeads  # an inbox without a counter: read the heads (the upsert below creates it)
        for user in guessed:
            heads[user] = known[user][0] + per_inbox[user]
            epochs[user] = known[user][1]
    users = [user for user in per_inbox if user not in known]
    if not users:
        return heads, epochs
    result = await store.counters.bulk_write(
        [UpdateOne({"_id": user}, {"$inc": {"seq": per_inbox[user]}}) for user in users],
        ordered=False, session=session)
    async for doc in store.counters.find({"_id": {"$in": users}}, {"seq": 1, "epoch": 1}, session=session):
        heads[doc["_id"]] = doc["seq"]
        epochs[doc["_id"]] = doc["epoch"]
    if result.matched_count < len(users):
        missing = [user for user in users if user not in heads]
        created = {user: new_epoch() for user in missing}
        await store.counters.bulk_write(
            [UpdateOne({"_id": user},
                       {"$setOnInsert": {"seq": per_inbox[user], "epoch": created[user]}},
                       upsert=True) for user in missing],
            ordered=False, session=session,
        )
        heads.update({user: per_inbox[user] for user in missing})
        epochs.update(created)
    return heads, epochs
