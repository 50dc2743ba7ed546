"""The newest entries of each inbox, kept on the node that wrote them, so a pull after a notify is
served from memory instead of the store.

Why it is sound: an entry is immutable once it is committed (seq -> message never changes) and an
inbox has no holes (see ``im/delivery/archive.py``), so a run of consecutive seqs this node saw
committed is exactly what the store would return for that range. The cache is filled only *after* the
commit (write-first still holds: nothing is served that is not durable) and by pages read from the
store.

The cache knows entries, not heads: the caller says which head a page is served at (the seq allocator
knows it on a single node; a cluster node reads it from the store).

Memory is bounded twice: at most ``max_per_user`` newest entries per inbox, and at most ``max_entries``
in all (least recently used inboxes are dropped first). Entries every device acknowledged are dropped
when the inbox is trimmed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from im.models import PullResult

__all__ = ["InboxCache"]

Message = dict[str, Any]


class _Tail:
    """One inbox: its epoch and a run of consecutive committed entries, the newest it saw."""

    __slots__ = ("entries", "epoch", "first")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.first = 0  # seq of entries[0]
        # A list, not a deque: an empty deque is much larger, and most tails hold a few entries.
        self.entries: list[Message] = []

    @property
    def last(self) -> int:
        return self.first + len(self.entries) - 1


class InboxCache:
    def __init__(self, *, max_entries: int, max_per_user: int = 256) -> None:
        self._max_entries = max_entries
        self._max_per_user = max_per_user
        self._tails: OrderedDict[str, _Tail] = OrderedDict()
        self._entries = 0

    def __len__(self) -> int:
        return self._entries

    # -- filling --------------------------------------------------------------------------------------

    def committed(self, user: str, *, epoch: str, messages: Iterable[Message]) -> None:
        """Entries of ``user``'s inbox, in seq order, known committed (just written, or read back)."""
        tail = self._tails.get(user)
        if tail is None or tail.epoch != epoch:
            self._drop(user)
            tail = self._tails[user] = _Tail(epoch)
        else:
            self._tails.move_to_end(user)
        for message in messages:
            seq = message["seq"]
            if tail.entries and seq <= tail.last:
                continue  # already here, or older than the run held (the newest entries matter)
            if seq != tail.last + 1 or not tail.entries:
                # Empty, or another writer's entries are missing in between: the run starts here.
                self._entries -= len(tail.entries)
                tail.entries.clear()
                tail.first = seq
            tail.entries.append(message)
            self._entries += 1
            if len(tail.entries) > self._max_per_user:
                del tail.entries[0]
                tail.first += 1
                self._entries -= 1
        self._evict()

    def trimmed(self, user: str, floor: int) -> None:
        """Every device holds the entries up to ``floor``: they are no longer needed here."""
        tail = self._tails.get(user)
        if tail is None:
            return
        drop = min(max(floor - tail.first + 1, 0), len(tail.entries))
        if drop:
            del tail.entries[:drop]
            tail.first += drop
            self._entries -= drop

    # -- reading --------------------------------------------------------------------------------------

    def serve(self, user: str, *, after: int, limit: int, head: int, epoch: str) -> PullResult | None:
        """The page ``pull`` would read from the store at ``head``, or None when this node does not
        hold all of it (or there is a gap to report: the store path knows the floor)."""
        tail = self._tails.get(user)
        if tail is None or tail.epoch != epoch:
            return None
        end = min(after + limit, head)
        if after > head or (end > after and not (tail.first <= after + 1 and end <= tail.last)):
            return None  # a gap to report, or entries this node does not hold: the store answers
        self._tails.move_to_end(user)
        messages = tail.entries[after + 1 - tail.first:end + 1 - tail.first]
        return PullResult(messages=messages, next=max(end, after), head=head, epoch=tail.epoch,
                          more=end < head)

    def entries_between(self, user: str, low: int, high: int) -> list[Message] | None:
        """The entries with seq in (low, high] when all of them are here, else None."""
        tail = self._tails.get(user)
        if tail is None or high <= low:
            return [] if high <= low else None
        if tail.first > low + 1 or tail.last < high:
            return None
        return tail.entries[low + 1 - tail.first:high + 1 - tail.first]

    # -- bounds ---------------------------------------------------------------------------------------

    def _drop(self, user: str) -> None:
        tail = self._tails.pop(user, None)
        if tail is not None:
            self._entries -= len(tail.entries)

    def _evict(self) -> None:
        # Inboxes without entries are small, but they are bounded too (by the same number).
        while (self._entries > self._max_entries or len(self._tails) > self._max_entries) and self._tails:
            _, tail = self._tails.popitem(last=False)
            self._entries -= len(tail.entries)
