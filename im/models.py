"""Plain data passed between the store, the service and the transports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AckResult", "Draft", "PullResult", "Receipt", "direct_conversation_id"]


def direct_conversation_id(a: str, b: str) -> str:
    """One id per pair whatever the direction: ``d:<smaller>:<larger>``."""
    first, second = sorted((a, b))
    return f"d:{first}:{second}"


@dataclass(slots=True)
class Draft:
    """A message accepted for writing; ``recipients`` are the inboxes that get an entry (sender included)."""

    sender: str
    to: str
    conv: str
    kind: str
    body: Any
    client_msg_id: str
    recipients: tuple[str, ...]
    # Called with the receipt once the message is durable, before any notify of it is published: a
    # sender's socket that takes its own entries from receipts is then not woken for them.
    before_notify: Callable[[Receipt], None] | None = field(default=None, compare=False, repr=False)
    # When it was queued for the group commit (the loop's clock): how long the queue makes sends wait.
    queued_at: float = field(default=0.0, compare=False, repr=False)

    @property
    def dedup_key(self) -> tuple[str, str]:
        return (self.sender, self.client_msg_id)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the sender gets back once the message is durable: ids and the seq in every inbox it entered."""

    msg_id: str
    client_msg_id: str
    conv: str
    to: str
    ts: int
    seqs: dict[str, int]
    duplicate: bool = False

    def seq_of(self, user: str) -> int:
        return self.seqs[user]

    def to_dict(self, *, sender: str) -> dict[str, Any]:
        return {
            "msg_id": self.msg_id,
            "client_msg_id": self.client_msg_id,
            "conv": self.conv,
            "to": self.to,
            "ts": self.ts,
            # The recipient's inbox seq (see docs/design.md); the sender's own seq is given too so a
            # client can recognise its own message when it pulls its inbox.
            "seq": self.seqs.get(self.to, self.seqs.get(sender, 0)),
            "sender_seq": self.seqs.get(sender, 0),
            "duplicate": self.duplicate,
        }


@dataclass(slots=True)
class PullResult:
    """One page of an inbox.

    ``next`` is the seq the client now holds everything up to (ack it, pull after it). ``gap`` is true
    when the client's ``after`` can no longer be served incrementally (already trimmed for it, or from
    another epoch): it should reload history, then continue from ``next``.
    """

    messages: list[dict[str, Any]]
    next: int
    head: int
    epoch: str
    gap: bool = False
    more: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "next": self.next,
            "head": self.head,
            "epoch": self.epoch,
            "gap": self.gap,
            "more": self.more,
        }


@dataclass(frozen=True, slots=True)
class AckResult:
    """``cursor`` is this device's acknowledged seq; ``trimmed`` the inbox floor after the ack."""

    cursor: int
    trimmed: int

    def to_dict(self) -> dict[str, int]:
        return {"cursor": self.cursor, "trimmed": self.trimmed}
