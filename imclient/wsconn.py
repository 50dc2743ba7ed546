"""One open WebSocket of the SDK: msgpack frames out, replies matched to their calls by ``rid``.

A call's timeout is a timer on its future, not a ``wait_for``: the reply is handed over in the callback
that read its frame, and every extra event-loop turn between a frame's arrival and the code waiting for
it is latency when the loop is busy.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import msgpack
import tornado.websocket

from imclient.errors import ApiError, ConnectionFailed

__all__ = ["WsConnection", "ws_url_of"]


def ws_url_of(base_url: str) -> str:
    """The WebSocket endpoint of a node, from its HTTP base URL (``https`` gives ``wss``)."""
    scheme, _, rest = base_url.rstrip("/").partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest + "/ws"


class WsConnection:
    """One open WebSocket: replies matched to calls by ``rid``, everything else to the client.

    Once it has closed (:meth:`fail_all`) it stays closed: every waiting call fails at once, so no caller
    waits out its timeout on a socket that can no longer answer.
    """

    __slots__ = ("closed", "conn", "ended", "pending", "rids")

    def __init__(self) -> None:
        self.conn: tornado.websocket.WebSocketClientConnection | None = None  # set once connected
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.rids = itertools.count(1)
        self.closed = False
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # the socket closed

    def write(self, frame: dict[str, Any]) -> None:
        """Send one frame; :class:`ConnectionFailed` if the socket is closed."""
        if self.closed or self.conn is None:
            raise ConnectionFailed("WebSocket is closed")
        try:
            self.conn.write_message(msgpack.packb(frame, use_bin_type=True), binary=True)
        except tornado.websocket.WebSocketClosedError:
            raise ConnectionFailed("WebSocket is closed") from None

    async def call(self, frame: dict[str, Any], timeout_secs: float) -> dict[str, Any]:
        """Send ``frame`` with a new ``rid`` and return its reply; an error frame raises :class:`ApiError`
        (status 0: frames carry no HTTP status), no reply in time :class:`ConnectionFailed`."""
        rid = next(self.rids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.pending[rid] = future
        timer = loop.call_later(timeout_secs, _time_out, future,
                                f"no answer to {frame.get('t')} within {timeout_secs:.0f} s")
        try:
            self.write({**frame, "rid": rid})
            reply = await future
        finally:
            timer.cancel()
            self.pending.pop(rid, None)
        if reply.get("t") == "error":
            raise ApiError(0, str(reply.get("code", "error")), str(reply.get("message", "")),
                           reply.get("field"))
        return reply

    def resolve(self, frame: dict[str, Any]) -> bool:
        """Hand ``frame`` to the call waiting for its ``rid``; False if none is (a push, or too late)."""
        future = self.pending.get(frame.get("rid"))  # type: ignore[arg-type]
        if future is None or future.done():
            return False
        future.set_result(frame)
        return True

    def fail_all(self) -> None:
        """The socket closed: fail every waiting call and mark the connection ended."""
        self.closed = True
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionFailed("WebSocket closed"))
        self.pending.clear()
        if not self.ended.done():
            self.ended.set_result(None)

    def close(self) -> None:
        """Start closing the socket; Tornado's close callback then runs :meth:`fail_all`."""
        if self.conn is not None:
            self.conn.close()


def _time_out(future: asyncio.Future[dict[str, Any]], message: str) -> None:
    if not future.done():
        future.set_exception(ConnectionFailed(message))
