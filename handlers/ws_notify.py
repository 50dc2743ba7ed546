"""The notifies of one WebSocket: what its client has been told of its inbox head.

A notify is a hint, so only the newest seq matters: while the peer is not taking what was written to
it, notifies are coalesced (newer seqs overwrite the pending one) and sent once it has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from im.errors import ImError

__all__ = ["SocketNotifies"]

log = logging.getLogger(__name__)


class SocketNotifies:
    __slots__ = ("_emit", "_own_upto", "_pending", "_rechecking", "_sent")

    def __init__(self, emit: Callable[[dict[str, Any]], None]) -> None:
        self._emit = emit
        self._pending = -1
        self._sent = -1
        # With echo=0: the highest seq of the user's inbox that this socket's own sends created.
        self._own_upto = 0
        self._rechecking: asyncio.Task[None] | None = None

    def own_entry(self, seq: int) -> None:
        """A send of this socket created entry ``seq`` (echo=0): its client has it from the ``sent``
        reply, so the notify of it is not sent to this socket."""
        self._own_upto = max(self._own_upto, seq)

    def changed(self, seq: int, *, held: bool) -> None:
        """The inbox reached ``seq``: notify now, or once the peer took its backlog (``held``)."""
        if seq <= self._own_upto:
            return
        self._pending = max(self._pending, seq)
        if not held:
            self.flush()

    def flush(self) -> None:
        if self._pending > self._sent:
            self._sent = self._pending
            self._emit({"t": "notify", "seq": self._sent})

    def recheck(self, read_head: Callable[[], Awaitable[int]], *, held: Callable[[], bool], who: str) -> None:
        """Notifies may have been lost (the hub's poke after a Redis outage): read the inbox head from
        the store and notify it, even if that seq was notified before, since the client would ignore a
        seq it already holds and never pull what was stored while notifies were lost."""
        if self._rechecking is None:
            self._rechecking = asyncio.create_task(self._notify_head(read_head, held, who))

    async def _notify_head(self, read_head: Callable[[], Awaitable[int]], held: Callable[[], bool],
                           who: str) -> None:
        try:
            head = await read_head()
        except ImError as error:
            log.warning("ws %s: inbox head not read for a re-check (%s); notifying the last seq again",
                        who, error.message)
            head = max(self._sent, 0)
        finally:
            self._rechecking = None
        if head > 0:
            self._pending = max(self._pending, head)
            self._sent = min(self._sent, head - 1)
            if not held():
                self.flush()

    def close(self) -> None:
        if self._rechecking is not None:
            self._rechecking.cancel()
