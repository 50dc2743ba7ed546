"""Admission of client sends: refused early and cheaply when the group commit cannot take them soon.

A node offered more than it can store would otherwise queue every send and answer each one later and
later, until clients time out and retry into the same queue. The measure is the wait of the oldest
draft still queued (the queue's own delay, whatever the offered rate), plus a cap on how many drafts
may be queued (memory). Over either bound a send is refused with ``overloaded`` (503 and
``Retry-After``; a WebSocket error frame) before anything is checked in the store. Receipts and other
writes of the node itself are never refused: they are what lets the backlog drain.
"""

from __future__ import annotations

from dataclasses import dataclass

from im.delivery.batching import GroupCommitter
from im.errors import Overloaded
from im.ops.metrics import Metrics

__all__ = ["SendAdmission"]

# What a refused client is told to wait: about the time the queue needs to drain to the bound.
RETRY_AFTER_SECS = 1.0


@dataclass(frozen=True, slots=True)
class SendAdmission:
    """``max_wait_secs`` bounds the oldest queued send's wait, ``max_queued`` the queue (0: no bound)."""

    max_wait_secs: float = 0.0
    max_queued: int = 0

    def check(self, committer: GroupCommitter, metrics: Metrics) -> None:
        """Raise :class:`Overloaded` when a new send would join a queue over its bounds."""
        if self.max_queued and committer.queued >= self.max_queued:
            metrics.sends_refused.labels("queue_full").inc()
            raise Overloaded(f"this node has {committer.queued} messages waiting to be stored; retry shortly",
                             retry_after_secs=RETRY_AFTER_SECS)
        if self.max_wait_secs and committer.oldest_wait() > self.max_wait_secs:
            metrics.sends_refused.labels("queue_wait").inc()
            raise Overloaded("this node's messages wait too long to be stored; retry shortly",
                             retry_after_secs=RETRY_AFTER_SECS)
