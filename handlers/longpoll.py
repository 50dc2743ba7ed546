"""HTTP long-poll: the transport for clients behind proxies that buffer or forbid WebSocket upgrades."""

from __future__ import annotations

import asyncio

from handlers.base import ApiHandler
from im.models import PullResult
from im.protocol import parse_pull, read_int

__all__ = ["PollHandler"]


class PollHandler(ApiHandler):
    """``GET /api/v1/poll?after=K&limit=L&timeout=T``: acknowledge K, return what is newer, or wait.

    Nothing about the waiter outlives the request: when the client goes away the wait is cancelled and
    the waiter unregistered, and a restarted or different node serves the next poll the same way.
    """

    _wait: asyncio.Task[PullResult] | None = None
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
        self._wait = asyncio.ensure_future(
            self.service.poll(principal, after=after, limit=limit, timeout_secs=timeout)
        )
        try:
            result = await self._wait
        except asyncio.CancelledError:
            if self._client_gone:
                return  # nobody to answer; the waiter is already unregistered
            raise
        finally:
            self._wait = None
        self.reply(result.to_dict())

    def _stream_closed(self) -> bool:
        stream = getattr(self.request.connection, "stream", None)
        return stream is not None and stream.closed()

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._wait is not None:
            self._wait.cancel()
