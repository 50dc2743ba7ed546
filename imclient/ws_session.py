"""The WebSocket transport: connect and authenticate, pull on connect and after every notify, ack.

Frames are handled in Tornado's message callback, not by a reader task: a notify wakes the pull and a
reply resolves its call in the turn that read it, and a client costs one task (its pull loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from typing import TYPE_CHECKING

import msgpack
import tornado.httpclient
import tornado.websocket

from imclient.cursor import InboxCursor
from imclient.errors import ApiError, ConnectionFailed
from imclient.policy import CALL_TIMEOUT_SECS, RELOGIN_CODES, Kicked, Relogin
from imclient.wsconn import WsConnection, ws_url_of

if TYPE_CHECKING:
    from imclient.client import Client

__all__ = ["WsSession"]

# Every part of the client logs under one name, so configuring that logger configures the client.
log = logging.getLogger("imclient.client")

# Keep-alive pings from the client side find a silently dead server (the server pings too).
WS_PING_INTERVAL_SECS = 20.0
WS_PING_TIMEOUT_SECS = 20.0
CONNECT_TIMEOUT_SECS = 10.0
# Largest frame accepted from the server: a whole pull page arrives as one frame.
MAX_FRAME_BYTES = 16 * 1024 * 1024


class WsSession:
    """The client's WebSocket: at most one open at a time (:attr:`current`), served until it closes.

    Settings are read from the client on every use (they are public attributes an application may
    change). Acks are coalesced to one per ``ack_interval_secs``: each costs the server a cursor write,
    a trim and delivered receipts, while the cursor itself stays exact without them.
    """

    def __init__(self, client: Client, cursor: InboxCursor, wake: asyncio.Event) -> None:
        self._client = client
        self._cursor = cursor
        self._wake = wake  # set by a notify, a closed socket or an own send that needs a pull
        #: The socket being served, None between sockets.
        self.current: WsConnection | None = None
        self._acked_seq = cursor.last_seq
        self._ack_timer: asyncio.TimerHandle | None = None

    async def open(self) -> WsConnection | None:
        """Connect and authenticate; ``None`` means "use long-poll instead" (auto mode only)."""
        client = self._client
        # echo=0: our own sends are not notified to this socket; the cursor takes them from the receipts.
        url = (client.ws_url or ws_url_of(client.base_url)) + "?format=msgpack&echo=0"
        request = tornado.httpclient.HTTPRequest(url, connect_timeout=CONNECT_TIMEOUT_SECS,
                                                 request_timeout=CONNECT_TIMEOUT_SECS)
        ws = WsConnection()
        try:
            conn = await tornado.websocket.websocket_connect(
                request, ping_interval=WS_PING_INTERVAL_SECS, ping_timeout=WS_PING_TIMEOUT_SECS,
                max_message_size=MAX_FRAME_BYTES, on_message_callback=functools.partial(self._on_frame, ws),
            )
        except (OSError, tornado.httpclient.HTTPClientError, tornado.websocket.WebSocketError,
                TimeoutError) as exc:
            if client.transport == "ws":
                raise ConnectionFailed(f"WebSocket upgrade failed: {exc}") from None
            log.info("%s: WebSocket unavailable at %s (%s); using long-poll", client.user, url, exc)
            return None
        # Small frames, latency first: TCP_NODELAY, so no frame waits for the peer's delayed ACK. Tornado
        # exposes the flag on the connection's protocol object only.
        if conn.protocol is not None:
            conn.protocol.set_nodelay(True)
        ws.conn = conn
        try:
            await ws.call({"t": "auth", "token": await client._token()}, CALL_TIMEOUT_SECS)
        except ApiError as error:
            conn.close()
            await ws.ended
            if error.code in RELOGIN_CODES:
                raise Relogin(error.message) from None
            raise
        except BaseException:
            conn.close()
            ws.fail_all()
            raise
        return ws

    async def serve(self, ws: WsConnection) -> None:
        """Pull on connect and after every notify, until the socket closes."""
        client = self._client
        self.current = ws
        client._set_connected("ws")
        self._wake.set()
        try:
            while not client._closing:
                await self._woken_or_idle()
                self._wake.clear()
                if ws.closed:
                    break
                while True:
                    reply = await ws.call({"t": "pull", "after": self._cursor.last_seq,
                                           "limit": client.pull_limit}, CALL_TIMEOUT_SECS)
                    if not await self._cursor.absorb(reply):
                        break
                    if reply.get("messages"):
                        self.ack_soon()
                    if not reply.get("more"):
                        break
        except ApiError as error:
            if error.code in RELOGIN_CODES:
                raise Relogin(error.message) from None
            raise
        finally:
            self.flush_ack()  # what was delivered on this socket, before it goes
            self.current = None
            ws.close()
            await ws.ended
        if client.stopped_reason == "kicked":
            raise Kicked("kicked")

    async def _woken_or_idle(self) -> None:
        """Until a notify (or a closed socket, or an own send) asks for a pull, or ``idle_pull_secs``
        pass without one."""
        idle = self._client.idle_pull_secs
        if idle <= 0:
            await self._wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), idle)

    def close(self) -> None:
        """The client is closing: ack what was delivered, then close the socket."""
        self.flush_ack()
        if self.current is not None:
            self.current.close()

    def ack_soon(self) -> None:
        """Ack ``last_seq`` now, or at the end of the current ack interval (coalescing)."""
        if self._client.ack_interval_secs <= 0:
            self.flush_ack()
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(
                self._client.ack_interval_secs, self.flush_ack)

    def flush_ack(self) -> None:
        """Send the pending ack, if any, on the open socket (long-poll acks with its next ``after``)."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        ws = self.current
        last_seq = self._cursor.last_seq
        if ws is None or ws.closed or last_seq <= self._acked_seq:
            return
        with contextlib.suppress(ConnectionFailed):
            ws.write({"t": "ack", "upto": last_seq})  # its reply is ignored
            self._acked_seq = last_seq

    def _on_frame(self, ws: WsConnection, message: str | bytes | None) -> None:
        """Tornado's callback for every frame of ``ws`` (None: the socket closed)."""
        client = self._client
        if message is None:
            ws.fail_all()
            self._wake.set()
            return
        try:
            frame = msgpack.unpackb(message, raw=False) if isinstance(message, bytes) else json.loads(message)
        except ValueError:
            log.warning("%s: undecodable frame dropped", client.user)
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("t")
        if kind == "notify":
            if isinstance(frame.get("seq"), int) and frame["seq"] > self._cursor.last_seq:
                self._wake.set()
                if client.on_notify is not None:
                    try:
                        client.on_notify(frame["seq"], "ws")
                    except Exception:  # an app hook must not close the socket (Tornado would)
                        log.exception("%s: on_notify failed", client.user)
        elif kind == "kicked":
            client.stopped_reason = "kicked"
        elif not ws.resolve(frame) and kind == "error":
            log.info("%s: error frame %s: %s", client.user, frame.get("code"), frame.get("message"))
