"""Delivered and read receipts: drafts for the senders' inboxes, and per-message aggregates.

A receipt travels to the original sender as an ordinary inbox entry of kind ``receipt`` (durable and
ordered like any message), written through the same group-commit path. One receipt entry covers every
message of one (sender, conversation) that one reader's ack or read frame touched, so acknowledging a
hundred messages costs the sender one entry, not a hundred. Its ``client_msg_id`` is derived from the
status and the message ids, so a repeated ack or read frame stores nothing new (the unique
(from, client_msg_id) index of the archive dedups it).

A group message's receipts are kept in an aggregate (``receipts`` collection, one document per group
message: who it was delivered to and who read it, and of how many recipients), which answers "who has
read this" without scanning inboxes. Its sender gets one entry per status when *every* recipient has
reached it (``{"status", "all": true, "msg_ids"}``, no ``by``), not one per member: in a large group
per-member entries would cost as many writes into the sender's inbox as the message itself, from
every node at once. One-to-one messages have no aggregate: their one receipt entry per status says it
all, and the hot ack path stays one write cheaper.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from im.errors import InvalidInput
from im.models import Draft
from im.storage.store import store_errors

__all__ = ["DELIVERED", "READ", "RECEIPT_KIND", "Milestone", "ReceiptStore", "Touched", "milestone_drafts",
           "parse_msg_id", "receipt_drafts"]

RECEIPT_KIND = "receipt"
DELIVERED = "delivered"
READ = "read"
# Message ids carried by one receipt entry; more are split over several entries.
MAX_IDS_PER_RECEIPT = 500


@dataclass(frozen=True, slots=True)
class Touched:
    """A message a reader's ack or read covered."""

    msg_id: str
    conv: str
    sender: str


@dataclass(frozen=True, slots=True)
class Milestone:
    """Every recipient of a group message has reached ``status``."""

    message: Touched
    status: str


def parse_msg_id(value: str, field: str = "msg_id") -> ObjectId:
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise InvalidInput(f"{field} is not a message id", field=field) from None


def is_group_conversation(conv: str) -> bool:
    return conv.startswith("g:")


def wants_receipt(reader: str, *, sender: str, kind: str) -> bool:
    """No receipts for receipts (they would echo forever) nor for one's own messages."""
    return sender != reader and kind != RECEIPT_KIND


def receipt_drafts(reader: str, status: str, touched: Iterable[Touched]) -> list[Draft]:
    """One receipt draft per (sender, conversation) and chunk of ids, from ``reader`` to the sender."""
    by_target: dict[tuple[str, str], set[str]] = {}
    for item in touched:
        by_target.setdefault((item.sender, item.conv), set()).add(item.msg_id)
    drafts = []
    for (sender, conv), id_set in by_target.items():
        ids = sorted(id_set)
        for start in range(0, len(ids), MAX_IDS_PER_RECEIPT):
            chunk = ids[start:start + MAX_IDS_PER_RECEIPT]
            digest = hashlib.sha256("\n".join(chunk).encode()).hexdigest()[:40]
            drafts.append(Draft(
                sender=reader, to=sender, conv=conv, kind=RECEIPT_KIND,
                body={"status": status, "by": reader, "msg_ids": chunk},
                client_msg_id=f"r:{status}:{digest}", recipients=(sender,),
            ))
    return drafts


def milestone_drafts(reached: Iterable[Milestone]) -> list[Draft]:
    """One entry per message and status, into its sender's own inbox. The ``client_msg_id`` names the
    message, so a milestone seen complete by several batches or nodes is stored once."""
    return [
        Draft(sender=m.message.sender, to=m.message.sender, conv=m.message.conv, kind=RECEIPT_KIND,
              body={"status": m.status, "all": True, "msg_ids": [m.message.msg_id]},
              client_msg_id=f"r:{m.status}:all:{m.message.msg_id}", recipients=(m.message.sender,))
        # Delivered before read, so a sender never sees "read by all" before "delivered to all".
        for m in sorted(reached, key=lambda m: (m.status != DELIVERED, m.message.msg_id))
    ]


class ReceiptStore:
    def __init__(self, receipts: AsyncCollection[dict[str, Any]], messages: AsyncCollection[dict[str, Any]]
                 ) -> None:
        self._receipts = receipts
        self._messages = messages

    async def record(self, status: str, by_reader: Mapping[str, Sequence[Touched]]) -> list[Milestone]:
        """Add each reader to the aggregates of the group messages it touched (a read message counts as
        delivered too), and return the milestones this reached. One update per message, whatever the
        number of readers: a group message that 200 members' acks trimmed together costs one statement,
        not 200."""
        readers_of: dict[str, set[str]] = {}
        about: dict[str, Touched] = {}
        for reader, touched in by_reader.items():
            for t in touched:
                if is_group_conversation(t.conv):
                    readers_of.setdefault(t.msg_id, set()).add(reader)
                    about[t.msg_id] = t
        if not readers_of:
            return []
        fields = [DELIVERED] if status == DELIVERED else [DELIVERED, READ]
        ops = [
            UpdateOne(
                {"_id": ObjectId(msg_id)},
                {"$addToSet": {f: {"$each": sorted(readers)} for f in fields},
                 "$setOnInsert": {"conv": about[msg_id].conv, "from": about[msg_id].sender}},
                upsert=True,
            )
            for msg_id, readers in readers_of.items()
        ]
        async with store_errors("recording receipts"):
            await self._receipts.bulk_write(ops, ordered=False)
            counts = await self._counts([ObjectId(m) for m in readers_of])
        reached = []
        for msg_id, (recipients, reached_by) in counts.items():
            for f in fields:
                if recipients and len(reached_by[f]) >= recipients:
                    reached.append(Milestone(about[str(msg_id)], f))
        return reached

    async def _counts(self, ids: list[ObjectId]) -> dict[ObjectId, tuple[int, dict[str, list[str]]]]:
        """Per message: its number of recipients (the sender excluded) and who reached each status.
        The number is read from the archive once per message and then kept in its aggregate."""
        projection = {"of": 1, DELIVERED: 1, READ: 1}
        docs = await self._receipts.find({"_id": {"$in": ids}}, projection).to_list(len(ids))
        missing = [d["_id"] for d in docs if "of" not in d]
        sizes: dict[ObjectId, int] = {}
        if missing:
            async for m in self._messages.find({"_id": {"$in": missing}}, {"rcpt": 1, "from": 1}):
                sizes[m["_id"]] = sum(1 for r in m.get("rcpt", []) if r["u"] != m["from"])
            if sizes:
                await self._receipts.bulk_write(
                    [UpdateOne({"_id": i}, {"$set": {"of": n}}) for i, n in sizes.items()], ordered=False)
        return {d["_id"]: (d.get("of", sizes.get(d["_id"], 0)), {f: d.get(f, []) for f in (DELIVERED, READ)})
                for d in docs}

    async def readable(self, reader: str, msg_ids: Sequence[ObjectId]) -> list[Touched]:
        """The messages of ``msg_ids`` that ``reader`` received from someone else (and, for group
        messages, has not read yet).

        Ids of messages the reader never received are ignored, as if unknown (no existence leak).
        """
        async with store_errors("reading messages"):
            docs = await self._messages.find(
                {"_id": {"$in": list(msg_ids)}}, {"conv": 1, "from": 1, "kind": 1, "rcpt": 1}
            ).to_list(len(msg_ids))
            done = {
                d["_id"]
                async for d in self._receipts.find({"_id": {"$in": list(msg_ids)}, READ: reader}, {"_id": 1})
            }
        return [
            Touched(str(d["_id"]), d["conv"], d["from"])
            for d in docs
            if d["_id"] not in done and wants_receipt(reader, sender=d["from"], kind=d["kind"])
            and any(r["u"] == reader for r in d.get("rcpt", []))
        ]

    async def summary(self, msg_id: ObjectId) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(archived message, aggregate)`` of ``msg_id``, or None when there is no such message; a
        one-to-one message has no aggregate (empty)."""
        async with store_errors("reading receipts"):
            message = await self._messages.find_one({"_id": msg_id}, {"body": 0})
            if message is None:
                return None
            if not is_group_conversation(message["conv"]):
                return message, {}
            aggregate = await self._receipts.find_one({"_id": msg_id}) or {}
        return message, aggregate


def summary_dict(message: dict[str, Any], aggregate: dict[str, Any]) -> dict[str, Any]:
    """Counts and who, per status; ``recipients`` counts everyone but the sender."""
    recipients = [r["u"] for r in message.get("rcpt", []) if r["u"] != message["from"]]
    out: dict[str, Any] = {"msg_id": str(message["_id"]), "conv": message["conv"], "from": message["from"],
                           "recipients": len(recipients)}
    for status in (DELIVERED, READ):
        users = sorted(aggregate.get(status, []))
        out[status] = {"count": len(users), "users": users}
    return out
