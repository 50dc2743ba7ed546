"""How a message is archived: one document per message, with one inbox key per recipient.

An inbox is an index over the archive, not a collection of its own: each archived message carries
``inbox_key(user, seq)`` for every recipient in a unique multikey index. A message is then one document
however many inboxes it enters, and trimming an inbox is moving its floor, not deleting documents.
Keys are never deleted, so the unique index refuses a seq that was ever given: a writer with a wrong
idea of a head fails instead of reusing a seq.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId

from im.models import Draft, Receipt
from im.storage.store import INBOX_KEY_FIELD, dedup_key, inbox_key

__all__ = ["Batch", "WriteAgain", "Written", "entry_projection", "entry_to_message", "ms",
           "receipt_from_archive", "with_duplicate"]


def ms(ts: datetime) -> int:
    """A stored time as the protocol's milliseconds since the epoch."""
    return int(ts.timestamp() * 1000)


def entry_projection(user: str) -> dict[str, Any]:
    """What a pull reads of an archived message: its fields, and of its recipients only the reader."""
    return {"conv": 1, "from": 1, "to": 1, "kind": 1, "body": 1, "cmid": 1, "ts": 1,
            "rcpt": {"$elemMatch": {"u": user}}}


def entry_to_message(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An archived message as its reader's inbox entry (read with ``entry_projection``)."""
    return {
        "seq": doc["rcpt"][0]["s"],
        "msg_id": str(doc["_id"]),
        "conv": doc["conv"],
        "from": doc["from"],
        "to": doc["to"],
        "kind": doc["kind"],
        "body": doc["body"],
        "client_msg_id": doc["cmid"],
        "ts": ms(doc["ts"]),
    }


def receipt_from_archive(doc: Mapping[str, Any], *, duplicate: bool) -> Receipt:
    return Receipt(
        msg_id=str(doc["_id"]),
        client_msg_id=doc["cmid"],
        conv=doc["conv"],
        to=doc["to"],
        ts=ms(doc["ts"]),
        seqs={r["u"]: r["s"] for r in doc["rcpt"]},
        duplicate=duplicate,
    )


def with_duplicate(receipt: Receipt) -> Receipt:
    return dataclasses.replace(receipt, duplicate=True)


@dataclass(slots=True)
class Written:
    """What a batch write stored: receipts by dedup key, and the epoch of every inbox it wrote."""

    receipts: dict[tuple[str, str], Receipt]
    epochs: Mapping[str, str]


class WriteAgain(Exception):
    """Part of a batch (``written``) was stored; the rest is checked and written again (``reason``).
    ``contended``: another writer took seqs first, and may well do so again."""

    def __init__(self, written: Written, reason: str, *, contended: bool = False) -> None:
        super().__init__(reason)
        self.written = written
        self.reason = reason
        self.contended = contended


@dataclass(slots=True)
class Batch:
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
                ts=ms(self.now), seqs=seqs,
            ))
        return archive, receipts

    def receipts_by_key(self, receipts: list[Receipt], count: int) -> dict[tuple[str, str], Receipt]:
        """The receipts of the first ``count`` drafts (what an ordered insert stored), by dedup key."""
        return {d.dedup_key: r for d, r in zip(self.drafts[:count], receipts[:count], strict=True)}
