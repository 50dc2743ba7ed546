"""Per-user inboxes: atomic seq allocation with the write, bounded pulls, device cursors and trimming.

An inbox is an index over the archive, not a collection of its own: each archived message carries one
key per recipient, ``inbox_key(user, seq)``, in a unique multikey index. Why: a message is then one
document however many inboxes it enters (a one-to-one message used to cost an archive document and two
entry documents, and later two deletes), and trimming an inbox is moving its floor, not deleting
documents. The archive keeps every message anyway, so nothing is stored twice.

How a seq is never allocated without its entry (no hole a puller could skip, no gap after a crash):
cluster nodes claim seqs with a counter ``$inc`` in the same transaction as the archive documents; a
single node (the only writer) numbers from the heads it knows and stores the batch with one ordered
insert, whose partial outcome is always a prefix (see ``_write_alone``). Keys are never deleted, so the
unique index also refuses a seq that was ever given: a writer with a wrong idea of a head fails and
reads the heads instead of reusing a seq. Many concurrent sends share one write (see
``im/delivery/batching.py``), which is what makes the store's per-write cost affordable.
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
from pymongo.errors import BulkWriteError
from pymongo.read_concern import ReadConcern

from im.conversations.crypto import KeyRing
from im.delivery.batching import NaturalBatcher
from im.delivery.cache import InboxCache
from im.errors import ImError, InvalidInput, StoreUnavailable
from im.models import AckResult, Draft, PullResult, Receipt
from im.storage.store import (
    INBOX_KEY_FIELD,
    META_COLLECTION,
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

# A duplicate client_msg_id racing in (or, for a single writer, a seq found taken) stops a batch; what
# was not stored is re-checked and written again. More rounds than this means something else is wrong.
MAX_WRITE_ROUNDS = 3
# Keys read per page when looking for an inbox's head above its counter.
HEAD_PROBE_PAGE = 1000
# A single writer saves the heads it advanced to the counters this often (one write for all of them).
# Measured at 1,000 msg/s over 200 inboxes: every 0.5 s was ~400 counter updates a second, as many as
# the counter steps it replaced. A crash leaves counters up to this long behind, which only lengthens
# the read of keys above them when the heads are next loaded.
HEAD_SAVE_SECS = 5.0
# The document of the store's meta collection saying whether a single writer's heads were saved.
HEADS_STATE = "heads"
# Entries about to be trimmed are read in bounded pages of this many seqs (delivered receipts).
TRIM_READ_PAGE = 500
# Acknowledgements written together (one cursor bulk write, one trim bulk write per batch).
ACK_MAX_BATCH = 512
# Inboxes whose last trim time (for the trim interval) and floor are remembered; older ones may trim
# at once, and a held ack of one reports floor 0 until its next write.
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


# A single-device user's stored cursor is rewritten once it is this old (see ``_cursor_due``), or a
# tenth of the device idle time when that is shorter: staleness must not make an active device look idle.
CURSOR_REFRESH_SECS = 60.0


def _remember(recent: OrderedDict[str, Any], user: str, value: Any) -> None:
    """Keep ``value`` for ``user`` among the ``LAST_TRIM_USERS`` most recently touched inboxes."""
    recent[user] = value
    recent.move_to_end(user)
    if len(recent) > LAST_TRIM_USERS:
        recent.popitem(last=False)


def _merged(seen: _Ack | None, a: _Ack) -> _Ack:
    """Two acks of one device as one: the highest seq, the latest time."""
    return a if seen is None else _Ack(a.user, a.device, max(a.upto, seen.upto), max(a.now, seen.now))


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
    cursor_writes: list[_Ack] = field(default_factory=list)  # the acks whose cursors are written now

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
                 ack_linger_secs: float = 0.0, trim_interval_secs: float = 0.0,
                 head_save_secs: float = HEAD_SAVE_SECS) -> None:
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
        # Acks of inboxes trimmed less than the trim interval ago, by user and device: their cursors are
        # written with that inbox's next trim (already scheduled). Why: a cursor upsert costs the store
        # ~0.5 ms, and a device acks after every pull; measured at 1,000 msg/s, cursor upserts were
        # ~40% of the store's time. A held ack lost in a crash only delays a trim: the device acks again.
        self._held: dict[str, dict[str, _Ack]] = {}
        self._cursor_refresh = timedelta(seconds=min(CURSOR_REFRESH_SECS, device_idle_secs / 10))
        # The floor last written or read per inbox (what a held ack reports as ``trimmed``).
        self._floors: OrderedDict[str, int] = OrderedDict()
        self._retrim_tasks: set[asyncio.Task[AckResult]] = set()
        # A single writer's heads not yet saved to the counters (see _write_alone), and the save timer.
        self._unsaved_heads: dict[str, int] = {}
        self._save_timer: asyncio.TimerHandle | None = None
        self._head_save_secs = head_save_secs
        self._head_saves: set[asyncio.Task[None]] = set()
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
        for round_ in range(MAX_WRITE_ROUNDS):
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
            except _WriteAgain as again:
                receipts.update(again.stored)
                log.info("a batch of %d was stored in part (%d): %s; writing the rest again",
                         len(fresh), len(again.stored), again.reason)
        else:
            raise StoreUnavailable("the messages could not be stored (inbox seqs or client_msg_ids kept "
                                   "colliding with other writes); retry with the same client_msg_id")
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

    @property
    def single_writer(self) -> bool:
        """Whether this node is the only writer of every inbox (one node, no bus): it then knows every
        head, and a batch is one insert with no transaction and no counter step (see ``_write_alone``)."""
        return self.cache is not None and self.cache.authoritative

    async def _write_batch(self, drafts: list[Draft]) -> dict[tuple[str, str], Receipt]:
        per_inbox = Counter(user for draft in drafts for user in draft.recipients)
        now = utcnow()
        msg_ids = [ObjectId() for _ in drafts]
        # Sealed outside any transaction: a conversation's first message creates its data key.
        cipher = self.cipher
        bodies = [d.body if cipher is None else await cipher.seal(d.conv, d.body) for d in drafts]
        batch = _Batch(drafts, msg_ids, bodies, now)
        if self.single_writer:
            return await self._write_alone(batch, per_inbox)
        return await self._write_shared(batch, per_inbox)

    async def _write_alone(self, batch: _Batch,
                           per_inbox: Mapping[str, int]) -> dict[tuple[str, str], Receipt]:
        """One node is the only writer: seqs come from the heads it knows, and the batch is one ordered
        ``insert_many``, no transaction and no counter step.

        Why it is safe: an ordered insert stores a prefix of the batch, and a prefix gives every inbox
        a prefix of its new seqs, so no inbox gets a hole; the unique inbox keys refuse a seq given
        twice (two nodes misconfigured as single, or a head known wrong), and the heads are then read
        again. Counters are written later, every ``HEAD_SAVE_SECS`` (``save_heads``): they are where a
        restarted node starts looking for a head, and :meth:`_load_heads` reads the keys above them.
        Measured on SecantusDB, a counter step costs 0.29 ms and the smallest transaction 1.6 ms,
        against 0.46 ms for an archived message.
        """
        cache = self.cache
        assert cache is not None
        heads = await self._known_heads(list(per_inbox))
        archive, receipts = batch.numbered({user: heads[user][0] + 1 for user in per_inbox})
        store = self._store
        failure: BulkWriteError | None = None
        try:
            async with store_errors("storing messages"):
                try:
                    with pymongo.timeout(store.timeout_secs):
                        await store.messages.insert_many(archive, ordered=True)
                    stored = len(archive)
                except BulkWriteError as exc:
                    if not is_duplicate_key_only(exc):
                        raise
                    stored, failure = exc.details.get("nInserted", 0), exc
        except BaseException:
            # Outcome unknown (timeout, lost store): part of the batch may be stored. The heads are
            # read again before the next write; a retry finds the stored part by client_msg_id.
            for user in per_inbox:
                cache.forget(user)
            raise
        kept = {draft.dedup_key: receipt for draft, receipt in zip(batch.drafts[:stored], receipts[:stored],
                                                                   strict=True)}
        self._cache_committed(batch.drafts[:stored], kept, {user: heads[user][1] for user in per_inbox})
        self._note_heads(kept.values())
        if failure is None:
            return kept
        if inbox_key_conflict(failure):
            log.warning("inbox seqs of a batch were taken (another writer?); reading the heads again")
            for user in per_inbox:
                cache.forget(user)
            raise _WriteAgain(kept, "inbox seqs were taken")
        raise _WriteAgain(kept, "a duplicate client_msg_id raced in")

    async def _write_shared(self, batch: _Batch,
                            per_inbox: Mapping[str, int]) -> dict[tuple[str, str], Receipt]:
        """Several nodes write: seqs are claimed from the counters inside the transaction that archives
        the batch (the counters' write locks order the writers of one inbox)."""
        store = self._store

        async def write(session: AsyncClientSession) -> tuple[dict[tuple[str, str], Receipt], dict[str, str]]:
            heads, epochs = await _claim_seqs(store, per_inbox, session)
            archive, receipts = batch.numbered({user: heads[user] - n + 1 for user, n in per_inbox.items()})
            try:
                await store.messages.insert_many(archive, ordered=True, session=session)
            except BulkWriteError as exc:
                if inbox_key_conflict(exc):
                    raise StaleHeads from None  # counters behind the archive's keys: nothing is written
                raise
            return {d.dedup_key: r for d, r in zip(batch.drafts, receipts, strict=True)}, epochs

        # A commit whose outcome is unknown at the deadline is safe: the retry finds it by client_msg_id.
        try:
            try:
                receipts, epochs = await self._transaction("storing messages", write)
            except StaleHeads:
                # Counters behind the keys (e.g. left by a single node that stopped before saving its
                # heads): move them up to the keys, once, and write again.
                await self._repair_counters(list(per_inbox))
                receipts, epochs = await self._transaction("storing messages", write)
        except StaleHeads:
            raise _heads_disagree(per_inbox) from None
        except BulkWriteError as exc:  # only a duplicate client_msg_id gets here (see store_errors)
            raise _WriteAgain({}, "a duplicate client_msg_id raced in") from exc
        self._cache_committed(batch.drafts, receipts, epochs)
        return receipts

    def _cache_committed(self, drafts: Sequence[Draft], receipts: Mapping[tuple[str, str], Receipt],
                         epochs: Mapping[str, str]) -> None:
        """The batch is durable: keep its entries (bodies in clear) for the recipients' pulls."""
        if self.cache is None:
            return
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
            # The last seq the batch gave this inbox is its head at commit.
            self.cache.committed(user, epoch=epochs[user], head=messages[-1]["seq"], messages=messages)

    # -- heads ----------------------------------------------------------------------------------------

    async def _known_heads(self, users: Sequence[str]) -> dict[str, tuple[int, str]]:
        """``(head, epoch)`` of inboxes: from the cache when it knows them, the rest from the store."""
        heads: dict[str, tuple[int, str]] = {}
        unknown: list[str] = []
        for user in users:
            known = None if self.cache is None else self.cache.head(user)
            if known is None:
                unknown.append(user)
            else:
                heads[user] = known
        if unknown:
            heads.update(await self._load_heads(unknown))
        return heads

    async def _load_heads(self, users: Sequence[str]) -> dict[str, tuple[int, str]]:
        """``(head, epoch)`` of inboxes read from the store, and told to the cache.

        A single writer saves counters after the fact (``save_heads``), so a counter may be behind the
        archive's keys after a crash: the keys above it are read too. Shared writers keep counters exact.
        """
        counters = self._store.counters
        async with store_errors("reading inbox heads"):
            docs = {d["_id"]: d
                    async for d in counters.find({"_id": {"$in": list(users)}}, {"seq": 1, "epoch": 1})}
            missing = [user for user in users if user not in docs]
            if missing:
                # Users created before counters existed; an upsert gives each an epoch that then stays.
                await counters.bulk_write([
                    UpdateOne({"_id": user}, {"$setOnInsert": {"seq": 0, "epoch": new_epoch()}}, upsert=True)
                    for user in missing], ordered=False)
                async for d in counters.find({"_id": {"$in": missing}}, {"seq": 1, "epoch": 1}):
                    docs[d["_id"]] = d
        heads = {user: docs[user]["seq"] for user in users}
        if self.single_writer:
            found = await asyncio.gather(*(self._head_from_keys(user, heads[user]) for user in users))
            heads = dict(zip(users, found, strict=True))
        out = {user: (heads[user], docs[user]["epoch"]) for user in users}
        if self.cache is not None:
            for user, (head, epoch) in out.items():
                self.cache.loaded(user, head=head, epoch=epoch)
        return out

    async def _head_from_keys(self, user: str, at_least: int) -> int:
        """The highest seq of ``user``'s inbox in the archive's keys, knowing it is >= ``at_least``.

        An inbox has no holes, so the keys above ``at_least`` are read in bounded pages until a page is
        not full (SecantusDB reads a whole range before sorting or limiting, so no open-ended query).
        """
        head = at_least
        prefix = f"{user}/"
        while True:
            async with store_errors("reading inbox keys"):
                docs = await self._store.messages.find(inbox_range(user, head, head + HEAD_PROBE_PAGE),
                                                       {INBOX_KEY_FIELD: 1}).to_list(HEAD_PROBE_PAGE)
            if not docs:
                return head
            head = max(int(key[len(prefix):])
                       for d in docs for key in d[INBOX_KEY_FIELD] if key.startswith(prefix))
            if len(docs) < HEAD_PROBE_PAGE:
                return head

    async def _repair_counters(self, users: Sequence[str]) -> None:
        """Raise counters that are behind the archive's keys to the keys (shared writers; see above)."""
        async with store_errors("reading inbox counters"):
            stored = {d["_id"]: d["seq"]
                      async for d in self._store.counters.find({"_id": {"$in": list(users)}})}
        found = await asyncio.gather(*(self._head_from_keys(user, stored.get(user, 0)) for user in users))
        behind = {user: head for user, head in zip(users, found, strict=True) if head > stored.get(user, 0)}
        if behind:
            log.warning("inbox counters behind the archive for %d inbox(es); raising them", len(behind))
            await self._raise_counters(behind, "repairing inbox counters")

    async def _raise_counters(self, heads: Mapping[str, int], what: str) -> None:
        """One unordered ``$max`` per inbox: a counter only ever moves up."""
        async with store_errors(what):
            await self._store.counters.bulk_write(
                [UpdateOne({"_id": user}, {"$max": {"seq": head}}) for user, head in heads.items()],
                ordered=False)

    async def start(self) -> None:
        """Mark the counters as possibly behind (single writer), or bring them up to the archive's keys
        if a single writer stopped without saving its heads (shared writers: they trust the counters).

        Why: a single writer saves heads after the fact; if it crashed and the database is then run by a
        cluster, a counter behind its inbox's keys would hide the newest entries from pulls until the
        next write to that inbox raised it. The mark costs one write per start and stop.
        """
        meta = self._store.db[META_COLLECTION]
        async with store_errors("starting the inboxes"):
            if self.single_writer:
                await meta.update_one({"_id": HEADS_STATE}, {"$set": {"saved": False}}, upsert=True)
                return
            state = await meta.find_one({"_id": HEADS_STATE})
        if state is None or state.get("saved", True):
            return
        log.warning("a single node stopped without saving inbox heads: checking every counter")
        async with store_errors("reading inbox counters"):
            users = [d["_id"] async for d in self._store.counters.find({}, {"_id": 1})]
        for start in range(0, len(users), ACK_MAX_BATCH):
            await self._repair_counters(users[start:start + ACK_MAX_BATCH])
        async with store_errors("starting the inboxes"):
            await meta.update_one({"_id": HEADS_STATE}, {"$set": {"saved": True}})

    def _note_heads(self, receipts: Iterable[Receipt]) -> None:
        """Heads a single writer advanced: saved to the counters within ``HEAD_SAVE_SECS``."""
        unsaved = self._unsaved_heads
        for receipt in receipts:
            for user, seq in receipt.seqs.items():
                if seq > unsaved.get(user, 0):
                    unsaved[user] = seq
        if unsaved:
            self._schedule_head_save()

    def _save_heads_soon(self) -> None:
        self._save_timer = None
        task = asyncio.create_task(self.save_heads())
        self._head_saves.add(task)
        task.add_done_callback(self._head_saves.discard)

    async def save_heads(self, *, stopping: bool = False) -> None:
        """One unordered write of ``$max`` for every head advanced since the last save. A failure keeps
        them for the next save (a counter behind is only slower to start from, never wrong).
        ``stopping``: the last save of a single writer, which then marks the counters as up to date."""
        if stopping:
            if self._save_timer is not None:
                self._save_timer.cancel()
                self._save_timer = None
            if self._head_saves:
                await asyncio.gather(*self._head_saves, return_exceptions=True)
        unsaved, self._unsaved_heads = self._unsaved_heads, {}
        if unsaved:
            try:
                await self._raise_counters(unsaved, "saving inbox heads")
            except StoreUnavailable as exc:
                log.warning("inbox heads not saved (%s); trying again", exc.message)
                for user, seq in unsaved.items():
                    if seq > self._unsaved_heads.get(user, 0):
                        self._unsaved_heads[user] = seq
                if not stopping:
                    self._schedule_head_save()
                return
        if stopping and self.single_writer and not self._unsaved_heads:
            async with store_errors("saving inbox heads"):
                await self._store.db[META_COLLECTION].update_one(
                    {"_id": HEADS_STATE}, {"$set": {"saved": True}})

    def _schedule_head_save(self) -> None:
        if self._save_timer is None:
            self._save_timer = asyncio.get_running_loop().call_later(self._head_save_secs,
                                                                     self._save_heads_soon)

    # -- read -----------------------------------------------------------------------------------------

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

        The range is bounded on both sides by the head (SecantusDB reads every match before limiting).
        A device behind the floor (it was idle while the others acknowledged) gets ``gap``: it should
        reload history, then go on from the floor. The floor and the range are read together; the floor
        only rises, and trimming deletes nothing, so a range read before a trim is still whole.
        """
        cache = self.cache
        head, epoch = (await self._known_heads([user]))[user]
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

    async def head(self, user: str) -> int:
        return (await self._known_heads([user]))[user][0]

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
        """Write every acknowledgement queued or held so far (shutdown); the trims of inboxes with held
        acks are done now, other trims put off by the trim interval are dropped (the next
        acknowledgement of those inboxes trims them)."""
        for handle in self._retrims.values():
            handle.cancel()
        self._retrims.clear()
        if self._held:
            await asyncio.gather(*(self._acks.submit(_deferred_trim(user)) for user in list(self._held)),
                                 return_exceptions=True)
        await self._acks.drain()

    async def _heads(self, users: Sequence[str]) -> dict[str, int]:
        return {user: head for user, (head, _) in (await self._known_heads(users)).items()}

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
            latest[(a.user, a.device)] = _merged(latest.get((a.user, a.device)), a)
        held: dict[tuple[str, str], AckResult] = {}
        for key, a in list(latest.items()):
            result = self._hold(a)
            if result is not None:
                held[key] = result
                del latest[key]
        # What was held for the inboxes written now goes with them.
        for user in {user for user, _ in latest} | set(retrims):
            for device, a in self._held.pop(user, {}).items():
                latest[(user, device)] = _merged(latest.get((user, device)), a)
        plan = None
        failed: dict[str, ImError] = {}
        if latest or retrims:
            plan = await self._plan_acks(latest, retrims)
            failed = await self._write_acks(plan)
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

    def _hold(self, a: _Ack) -> AckResult | None:
        """Hold ``a`` in memory if its inbox was trimmed less than the trim interval ago (its cursor is
        then written with the inbox's next trim, scheduled here); None: write it now."""
        if self._trim_interval_secs <= 0 or a.device is None:
            return None
        now = time.monotonic()
        last = self._last_trim.get(a.user)
        if last is None or now - last >= self._trim_interval_secs:
            return None
        devices = self._held.setdefault(a.user, {})
        devices[a.device] = _merged(devices.get(a.device), a)
        self._schedule_retrim(a.user, last, now)
        return AckResult(cursor=devices[a.device].upto, trimmed=self._floors.get(a.user, 0))

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
            if floor is not None and floor > trimmed and (user in forced or self._trim_due(user)):
                plan.trims[user] = (trimmed, floor)
        plan.cursor_writes = [a for key, a in latest.items()
                              if self._cursor_due(a, plan, stored_seen.get(key), len(devices[a.user]))]
        return plan

    def _cursor_due(self, a: _Ack, plan: _AckPlan, stored_seen_at: datetime | None, devices: int) -> bool:
        """Whether the batch writes ``a``'s cursor. It does unless the device is its user's only one, its
        stored cursor is recent, and the floor after the batch already covers the ack.

        Why: in that case the floor holds the same progress, and the cursor upsert is the store's
        costliest write per ack (measured on SecantusDB: 0.43 ms of its CPU, against 0.25 for the floor
        and 0.40 for an archived message); with sparse traffic every message is acked and trimmed on
        its own. A stale cursor is safe: it is never above what the device acknowledged, so it can only
        hold a floor back (when a second device appears, until this one acks again, which is then
        written). Its ``seen_at`` is refreshed every ``_cursor_refresh`` (at most a tenth of the device
        idle time), so a device in use never looks idle to the other devices' trims.
        """
        assert a.device is not None
        return (stored_seen_at is None or devices > 1 or a.now - stored_seen_at >= self._cursor_refresh
                or plan.floor(a.user) < plan.cursors[(a.user, a.device)])

    def _trim_due(self, user: str) -> bool:
        """Whether ``user``'s inbox may be trimmed now (and if so, note that it is). A trim put off by
        the interval is not forgotten: it is scheduled for when the interval ends."""
        if self._trim_interval_secs <= 0:
            return True
        now = time.monotonic()
        last = self._last_trim.get(user)
        if last is not None and now - last < self._trim_interval_secs:
            self._schedule_retrim(user, last, now)
            return False
        _remember(self._last_trim, user, now)
        return True

    def _schedule_retrim(self, user: str, last: float, now: float) -> None:
        """Trim ``user``'s inbox when the interval since its last trim (at ``last``) ends, once."""
        if user not in self._retrims:
            self._retrims[user] = asyncio.get_running_loop().call_later(
                last + self._trim_interval_secs - now, self._retrim, user)

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

        if plan.cursor_writes or plan.forget or plan.trims:
            await self._transaction("acknowledging", write)
        for user in {user for user, _ in plan.latest} | set(plan.trims):
            _remember(self._floors, user, plan.floor(user))
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
    """Seqs claimed from the counters were taken in the archive: the counters are behind its keys."""


class _WriteAgain(Exception):
    """Part of a batch (``stored``, receipts by dedup key) was stored; the rest is checked and written
    again (``reason``)."""

    def __init__(self, stored: dict[tuple[str, str], Receipt], reason: str) -> None:
        super().__init__(reason)
        self.stored = stored
        self.reason = reason


@dataclass(slots=True)
class _Batch:
    """Drafts about to be archived, with what is fixed before their seqs are known."""

    drafts: list[Draft]
    msg_ids: list[ObjectId]
    bodies: list[Any]
    now: datetime

    def numbered(self, first_seq: Mapping[str, int]) -> tuple[list[dict[str, Any]], list[Receipt]]:
        """The archive documents and receipts, in draft order, each inbox's seqs consecutive from
        ``first_seq[user]``."""
        next_seq = dict(first_seq)
        archive: list[dict[str, Any]] = []
        receipts: list[Receipt] = []
        for draft, msg_id, body in zip(self.drafts, self.msg_ids, self.bodies, strict=True):
            seqs: dict[str, int] = {}
            for user in draft.recipients:
                seqs[user] = next_seq[user]
                next_seq[user] += 1
            archive.append({
                "_id": msg_id, "conv": draft.conv, "from": draft.sender, "to": draft.to,
                "kind": draft.kind, "body": body, "cmid": draft.client_msg_id, "ts": self.now,
                "dk": dedup_key(*draft.dedup_key), "rcpt": [{"u": u, "s": s} for u, s in seqs.items()],
                INBOX_KEY_FIELD: [inbox_key(u, s) for u, s in seqs.items()],
            })
            receipts.append(Receipt(
                msg_id=str(msg_id), client_msg_id=draft.client_msg_id, conv=draft.conv, to=draft.to,
                ts=_ms(self.now), seqs=seqs,
            ))
        return archive, receipts


async def _claim_seqs(store: Store, per_inbox: Mapping[str, int],
                      session: AsyncClientSession) -> tuple[dict[str, int], dict[str, str]]:
    """Claim a block of seqs in every inbox of the batch and return the new heads and the epochs.

    The heads are read inside the transaction that holds the counters' write locks, so they are ours.
    Measured on SecantusDB, per-inbox ``UpdateOne``s cost half of one ``update_many`` over ``$in``.
    Registration creates every counter; the upsert is only for an inbox without one (a user created
    before counters existed), created here in the same transaction.
    """
    heads: dict[str, int] = {}
    epochs: dict[str, str] = {}
    users = list(per_inbox)
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
