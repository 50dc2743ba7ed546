"""Receiving: pull, acknowledge, and the long-poll that does both in one request."""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from im.accounts.tokens import Principal
from im.cluster.connections import Connections
from im.delivery.inboxes import Inboxes
from im.delivery.waiters import PollWaiter, cancel_swallowed
from im.errors import ConflictError, InvalidInput, Overloaded
from im.lru import LruDict
from im.models import AckResult, PullResult
from im.ops.metrics import Metrics

__all__ = ["Receiver"]

log = logging.getLogger(__name__)

# A long-poll that names an already-acknowledged `after` skips the ack write; the cursor's seen_at is
# still refreshed this often so an actively polling device never counts as idle.
ACK_REFRESH_SECS = 3600.0
# Devices whose last acknowledged cursor this node remembers.
ACK_CACHE_SIZE = 100_000


class Receiver:
    def __init__(self, inboxes: Inboxes, connections: Connections, metrics: Metrics) -> None:
        self._inboxes = inboxes
        self._connections = connections
        self._metrics = metrics
        self._acked: LruDict[tuple[str, str], tuple[int, float]] = LruDict(ACK_CACHE_SIZE)
        self.poll_waiters = 0

    async def pull(self, principal: Principal, *, after: int, limit: int) -> PullResult:
        with self._metrics.pull_seconds.time():
            await self._inboxes.joins.join(principal.user, principal.device, after=after)
            result = await self._inboxes.pull(principal.user, after=after, limit=limit)
        self._metrics.messages_delivered.inc(len(result.messages))
        return result

    def pull_cached(self, principal: Principal, *, after: int, limit: int) -> PullResult | None:
        """:meth:`pull` answered at once from this node's memory, or None when that needs the store.

        Why a synchronous twin: a pull right after a notify is nearly always served from memory, and a
        transport that answers it in the same event-loop turn as the request spares it a task and a
        turn of waiting behind everything else the loop has queued.
        """
        if not self._inboxes.joins.joined(principal.user, principal.device):
            return None  # the device's first pull joins it to its inbox, which needs the store
        started = time.perf_counter()
        result = self._inboxes.pull_cached(principal.user, after=after, limit=limit)
        if result is not None:
            self._metrics.pull_seconds.observe(time.perf_counter() - started)
            self._metrics.messages_delivered.inc(len(result.messages))
        return result

    async def ack(self, principal: Principal, *, upto: int) -> AckResult:
        with self._metrics.ack_seconds.time():
            result = await self._inboxes.ack(principal.user, principal.device, upto=upto)
        self._remember_ack(principal, result.cursor)
        return result

    async def poll(self, principal: Principal, *, after: int, limit: int, timeout_secs: float) -> PullResult:
        """Long-poll: acknowledge ``after``, then return what is newer, waiting up to ``timeout_secs``.

        The waiter is registered before the first pull, so a message stored between the pull and the
        wait still wakes it. Cancelling the call (client went away) unregisters the waiter.
        """
        user = principal.user
        self._connections.check_cap(user)
        self._ack_for_poll(principal, after)
        waiter = PollWaiter()
        self.poll_waiters += 1
        try:
            await self._connections.attach(user, waiter)  # a waiting long-poll counts as a connection
            result = await self.pull(principal, after=after, limit=limit)
            if result.messages or result.gap:
                return result
            if cancel_swallowed():
                raise asyncio.CancelledError  # the client is gone: do not hold a waiter for the timeout
            if not await waiter.wait(timeout_secs):
                return result
            if waiter.kicked:
                raise ConflictError("a newer session of this user connected", code="kicked")
            return await self.pull(principal, after=after, limit=limit)
        finally:
            self.poll_waiters -= 1
            self._connections.detach(user, waiter)

    def _ack_for_poll(self, principal: Principal, after: int) -> None:
        """A poll's ``after`` acknowledges what the client holds. Written in the background: nothing in
        the poll's answer depends on it, and acknowledgements are batched (``IM_ACK_LINGER_SECS``)."""
        if after <= 0:
            return
        cached = self._acked.get((principal.user, principal.device))
        if cached is not None and after <= cached[0] and time.monotonic() - cached[1] < ACK_REFRESH_SECS:
            return
        self._remember_ack(principal, after)  # a poll repeated before the write lands does not ack again
        # Queued with a callback, not a task: a poll answered needs no task of its own.
        outcome = self._inboxes.ack_nowait(principal.user, principal.device, upto=after)
        outcome.add_done_callback(functools.partial(self._poll_acked, principal, time.perf_counter()))

    def _poll_acked(self, principal: Principal, queued_at: float, outcome: asyncio.Future[AckResult]) -> None:
        if outcome.cancelled():
            return
        self._metrics.ack_seconds.observe(time.perf_counter() - queued_at)  # as `ack` times its own
        exc = outcome.exception()
        if exc is None:
            self._remember_ack(principal, outcome.result().cursor)
        elif not isinstance(exc, InvalidInput):  # InvalidInput: `after` beyond the head (another epoch)
            # Not lost: the next poll acknowledges again (the cursor only ever moves forward).
            self._acked.pop((principal.user, principal.device), None)
            if not isinstance(exc, Overloaded):  # a full ack queue says so in /metrics, not per poll
                log.warning("acknowledging for a long-poll of %s failed: %s", principal.user, exc)

    def _remember_ack(self, principal: Principal, cursor: int) -> None:
        self._acked.put((principal.user, principal.device), (cursor, time.monotonic()))
