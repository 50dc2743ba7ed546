"""HTTP long-poll: the transport for clients behind proxies that buffer or forbid WebSocket upgrades."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
from collections.abc import Iterator
from typing import Any

from config import Settings
from handlers.base import ApiHandler
from im.protocol import parse_pull, read_int
from im.service import MessagingService

__all__ = ["ParkedPolls", "PollHandler", "peer_gone"]

log = logging.getLogger(__name__)


def peer_gone(sock: socket.socket | None) -> bool:
    """True when the client's side of ``sock`` is closed (a FIN or an RST has arrived).

    A peek reads nothing away: end of stream or a socket error means gone; no data yet means alive.
    """
    if sock is None:
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class ParkedPolls:
    """The long-polls waiting on this node, whose sockets are checked every ``probe_secs``.

    A long-poll sends nothing while it waits, so nothing but the event loop's close report ends the
    wait of a client that went away; this check is the long-poll's counterpart of the WebSocket ping:
    a close the loop did not report (seen under uvloop after connection resets) still frees the waiter
    within ``probe_secs`` instead of at the poll's timeout. One timer serves every parked poll.
    """

    def __init__(self, probe_secs: float) -> None:
        self._probe_secs = probe_secs
        self._parked: set[PollHandler] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.found_gone = 0

    def __len__(self) -> int:
        return len(self._parked)

    def __iter__(self) -> Iterator[PollHandler]:
        return iter(list(self._parked))

    def park(self, poll: PollHandler) -> None:
        self._parked.add(poll)
        if self._timer is None and self._probe_secs > 0:
            self._arm()

    def leave(self, poll: PollHandler) -> None:
        self._parked.discard(poll)

    def _sweep(self) -> None:
        self._timer = None
        gone = [poll for poll in self._parked if poll.client_gone_unreported()]
        for poll in gone:
            poll.on_connection_close()
        if gone:
            self.found_gone += len(gone)
            log.info("%d waiting long-polls had lost their client without a close report; ended", len(gone))
        if self._parked:
            self._arm()

    def _arm(self) -> None:
        # A context of its own: the sweep belongs to no request (its log lines carry no request id).
        self._timer = asyncio.get_running_loop().call_later(self._probe_secs, self._sweep,
                                                            context=contextvars.Context())


class PollHandler(ApiHandler):
    """``GET /api/v1/poll?after=K&limit=L&timeout=T``: acknowledge K, return what is newer, or wait.

    Nothing about the waiter outlives the request: when the client goes away the wait is cancelled and
    the waiter unregistered, and a restarted or different node serves the next poll the same way.
    The poll runs in the request's own task (Tornado's), which a closed connection cancels: a task of
    its own (Task, coroutine, bookkeeping) would cost memory per parked poll for nothing.
    """

    _task: asyncio.Task[Any] | None = None
    _client_gone = False

    def initialize(self, service: MessagingService, settings: Settings,
                   parked: ParkedPolls) -> None:
        super().initialize(service, settings)
        self._parked = parked

    async def get(self) -> None:
        principal = self.principal
        query = self.query()
        after, limit = parse_pull(query, default_limit=self.settings_.pull_default_limit,
                                  max_limit=self.settings_.pull_max_limit)
        timeout = read_int(query, "timeout", default=int(self.settings_.long_poll_default_secs),
                           maximum=int(self.settings_.long_poll_max_secs))
        if self._client_gone or self._stream_closed():
            # Gone before the wait began (while prepare() checked the token, or even before the
            # request was handed over: tornado then never calls on_connection_close). Starting a wait
            # now would hold a waiter and a connection slot for the whole timeout.
            return
        task = self._task = asyncio.current_task()
        self._parked.park(self)
        try:
            result = await self.service.poll(principal, after=after, limit=limit, timeout_secs=timeout)
        except asyncio.CancelledError:
            if self._client_gone and task is not None:
                task.uncancel()  # our own cancel, handled: the request's task goes on to finish
                return  # nobody to answer; the waiter is already unregistered
            raise
        finally:
            self._task = None
            self._parked.leave(self)
        self.reply(result.to_dict())

    def _stream_closed(self) -> bool:
        stream = getattr(self.request.connection, "stream", None)
        return stream is not None and stream.closed()

    def client_gone_unreported(self) -> bool:
        """The client left but ``on_connection_close`` has not run (see :class:`ParkedPolls`)."""
        if self._client_gone:
            return False
        stream = getattr(self.request.connection, "stream", None)
        return stream is None or stream.closed() or peer_gone(stream.socket)

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._task is not None:
            self._task.cancel()
