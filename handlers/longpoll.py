"""HTTP long-poll: the transport for clients behind proxies that buffer or forbid WebSocket upgrades."""

from __future__ import annotations

import asyncio
from typing import Any

from handlers.base import ApiHandler
from im.protocol import parse_pull, read_int

__all__ = ["PollHandler"]


class PollHandler(ApiHandler):
    """``GET /api/v1/poll?after=K&limit=L&timeout=T``: acknowledge K, return what is newer, or wait.

    Nothing about the waiter outlives the request: when the client goes away the wait is cancelled and
    the waiter unregistered, and a restarted or different node serves the next poll the same way.
    The poll runs in the request's own task (Tornado's), which a closed connection cancels: a task of
    its own (Task, coroutine, bookkeeping) would cost memory per parked poll for nothing.
    """

    _task: asyncio.Task[Any] | None = None
    _client_gone = False

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
        try:
            result = await self.service.poll(principal, after=after, limit=limit, timeout_secs=timeout)
        except asyncio.CancelledError:
            if self._client_gone and task is not None:
                task.uncancel()  # our own cancel, handled: the request's task goes on to finish
                return  # nobody to answer; the waiter is already unregistered
            raise
        finally:
            self._task = None
        self.reply(result.to_dict())

    def _stream_closed(self) -> bool:
        stream = getattr(self.request.connection, "stream", None)
        return stream is not None and stream.closed()

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._task is not None:
            self._task.cancel()
