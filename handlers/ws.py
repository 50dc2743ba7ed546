"""WebSocket transport (``/ws``): JSON text frames or msgpack binary frames, one schema.

The socket only ever receives a body-less ``notify`` from the server unprompted; everything else is a
reply to a client frame. Memory per socket is bounded however the peer behaves:
- notifies are coalesced: while one is being written, newer seqs overwrite the pending one;
- frames are served concurrently (a pull is not stuck behind the durable write of the client's own
  send, nor behind an acknowledgement's batch), but at most ``MAX_FRAMES_IN_FLIGHT`` per socket: beyond
  that the next frame is not read until one is answered, so a client that sends but never reads
  stalls itself, not the server. Sends are queued for writing in frame order, so one client's
  messages keep their order;
- a socket opened with ``echo=0`` is not notified of entries its own sends created: its client takes
  them from the ``sent`` replies (``sender_seq``), so a send costs no extra pull round trip. Skipping
  every notify up to the highest such seq is safe because a client that finds ``sender_seq`` does not
  directly follow the last seq it holds pulls (whatever came in between is then fetched);
- a write that the peer does not take within ``ws_write_timeout_secs`` closes the socket (4408). The
  client loses nothing: the messages wait in its inbox and it pulls them after reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any

import tornado.httputil
import tornado.websocket

from config import Settings
from handlers.base import origin_allowed
from handlers.errors import error_frame
from im.auth import Principal, parse_bearer
from im.errors import AuthError, ImError, InvalidInput
from im.models import Receipt
from im.protocol import decode_frame, encode_frame, parse_ack, parse_pull, parse_read, parse_send, read_str
from im.service import MessagingService

__all__ = ["ImWebSocket", "hard_frame_limit"]

log = logging.getLogger(__name__)

# Close codes in the private range (4000-4999) so clients can tell them from protocol closes.
CLOSE_AUTH_TIMEOUT = 4401
CLOSE_SLOW_CONSUMER = 4408
CLOSE_RATE_LIMITED = 4429
CLOSE_KICKED = 4409
# Frames of one socket being served at once; the next frame is read only when one is answered.
MAX_FRAMES_IN_FLIGHT = 32
# Served before the next frame is read: the session's state depends on them.
SERIAL_FRAMES = frozenset({"auth", "ping"})


def hard_frame_limit(settings: Settings) -> int:
    """Frames up to this size are read and, if over ``max_frame_bytes``, answered with an error frame;
    larger ones make Tornado close the socket (1009) before buffering them."""
    return max(settings.max_frame_bytes * 16, 1024 * 1024)


class ImWebSocket(tornado.websocket.WebSocketHandler):
    service: MessagingService
    settings_: Settings

    def initialize(self, service: MessagingService, settings: Settings) -> None:
        self.service = service
        self.settings_ = settings
        self.principal: Principal | None = None
        self.binary = False
        self._auth_timer: asyncio.TimerHandle | None = None
        self._pending_seq = -1
        self._sent_seq = -1
        # With echo=0: the highest seq of the user's inbox that this socket's own sends created.
        self._echo_own = True
        self._own_upto = 0
        self._notify_task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- handshake ------------------------------------------------------------------------------------

    def check_origin(self, origin: str) -> bool:
        return origin_allowed(origin, host=self.request.host, allowed=self.settings_.allowed_origin_list)

    def get_compression_options(self) -> dict[str, Any] | None:
        return None  # frames are tiny; deflate would cost CPU and ~64 KiB per socket

    async def open(self) -> None:
        try:
            await self._open()
        finally:
            self._release_handshake()

    def _release_handshake(self) -> None:
        """Drop the handshake's request and response headers: Tornado has written the 101 and read
        every header it needs before ``open``, and ``open`` is their last reader, yet the handler would
        keep them (a JWT among them) for the socket's whole life: about 2 KB per idle socket, measured
        with ``scripts/conn_memory.py``."""
        self.request.headers = tornado.httputil.HTTPHeaders()
        self._headers = tornado.httputil.HTTPHeaders()

    async def _open(self) -> None:
        # Frames are small and latency is the point: with Nagle on (Tornado's default after the
        # upgrade), a reply written while the previous frame is unacknowledged waits for the peer's
        # delayed ACK, ~40 ms (measured: p90 notify-to-receive 45 ms at 100 msg/s).
        self.set_nodelay(True)
        self.binary = self.get_query_argument("format", "json") == "msgpack"
        self._echo_own = self.get_query_argument("echo", "1") != "0"
        try:
            self.service.check_client(self.request.remote_ip or "")
        except ImError as error:
            self._send_frame(error_frame(error))
            self.close(CLOSE_RATE_LIMITED, "rate limited")
            return
        header = self.request.headers.get("Authorization")
        if header:
            try:
                await self._authenticate(parse_bearer(header))
            except ImError as error:
                self._send_frame(error_frame(error))
                self.close(CLOSE_AUTH_TIMEOUT, "authentication failed")
            return
        loop = asyncio.get_running_loop()
        self._auth_timer = loop.call_later(self.settings_.ws_auth_timeout_secs, self._auth_timed_out)

    def _auth_timed_out(self) -> None:
        if self.principal is None and not self._closed:
            self._send_frame({"t": "error", "code": "auth_timeout",
                              "message": "no valid auth frame within the time limit"})
            self.close(CLOSE_AUTH_TIMEOUT, "authentication timeout")

    async def _authenticate(self, token: str) -> None:
        principal = await self.service.authenticate(token)
        if self._closed:
            return
        self.principal = principal
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        await self.service.connect(principal, self)

    # -- frames from the client -----------------------------------------------------------------------

    async def on_message(self, message: str | bytes) -> None:
        self.binary = isinstance(message, bytes)
        try:
            frame = decode_frame(message, max_bytes=self.settings_.max_frame_bytes)
        except ImError as error:
            await self._answer(_failed(error), None)
            return
        rid = frame.get("rid")
        if frame["t"] in SERIAL_FRAMES or self.principal is None:
            await self._answer(self._dispatch(frame), rid)
            return
        while len(self._in_flight) >= MAX_FRAMES_IN_FLIGHT:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
        if frame["t"] == "send":
            # Validated and queued for the store now, in frame order; answered once durable.
            try:
                reply: Awaitable[dict[str, Any]] = await self._queue_send(frame)
            except ImError as error:
                await self._answer(_failed(error), rid)
                return
        else:
            reply = self._dispatch(frame)
        task = asyncio.create_task(self._answer(reply, rid))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _answer(self, reply: Awaitable[dict[str, Any]], rid: Any) -> None:
        """Await one frame's reply and write it; an error becomes an error frame, never a closed socket."""
        try:
            frame = await reply
        except ImError as error:
            log.info("ws %s: %s (%s)", self._who(), error.code, error.message)
            frame = error_frame(error, rid=rid)
        except asyncio.CancelledError:
            if self._closed:
                return  # the peer went away while its frame was being served: nobody to answer
            raise
        except Exception:
            # Loop edge: one frame's unexpected failure must not kill a healthy connection.
            log.exception("ws %s: unexpected error serving a frame", self._who())
            frame = {"t": "error", "code": "internal", "message": "the server failed to serve this frame"}
        if rid is not None:
            frame["rid"] = rid
        await self._write(frame)

    async def _queue_send(self, frame: dict[str, Any]) -> Awaitable[dict[str, Any]]:
        principal = self.principal
        assert principal is not None
        request = parse_send(frame, max_text_chars=self.settings_.max_text_chars)
        receipt = await self.service.queue_send(
            principal, request, before_notify=None if self._echo_own else self._own_entry_stored)

        async def sent() -> dict[str, Any]:
            return {"t": "sent", **(await receipt).to_dict(sender=principal.user)}
        return sent()

    async def _dispatch(self, frame: dict[str, Any]) -> dict[str, Any]:
        kind = frame["t"]
        if kind == "ping":
            return {"t": "pong"}
        if kind == "auth":
            if self.principal is not None:
                raise InvalidInput("this connection is already authenticated", code="already_authenticated")
            await self._authenticate(read_str(frame, "token", max_chars=8192))
            assert self.principal is not None
            return {"t": "auth", "ok": True, "user": self.principal.user, "device": self.principal.device}
        principal = self.principal
        if principal is None:
            raise AuthError("send an auth frame first", code="unauthenticated")
        service, settings = self.service, self.settings_
        if kind == "send":
            return await (await self._queue_send(frame))
        if kind == "pull":
            after, limit = parse_pull(frame, default_limit=settings.pull_default_limit,
                                      max_limit=settings.pull_max_limit)
            result = await service.pull(principal, after=after, limit=limit)
            return {"t": "msgs", **result.to_dict()}
        if kind == "ack":
            upto = parse_ack(frame)
            result = await service.ack(principal, upto=upto)
            return {"t": "acked", "upto": upto, **result.to_dict()}
        if kind == "read":
            accepted = await service.read(principal, parse_read(frame))
            return {"t": "read", "ok": True, "msg_ids": accepted}
        raise InvalidInput(f"unknown frame type {kind!r}", code="unknown_type", field="t")

    # -- notifies to the client -----------------------------------------------------------------------

    def _own_entry_stored(self, receipt: Receipt) -> None:
        """A send of this socket is durable and about to be notified (echo=0): not to this socket."""
        assert self.principal is not None
        self._own_upto = max(self._own_upto, receipt.seqs.get(self.principal.user, 0))

    def inbox_changed(self, seq: int) -> None:
        """Hub callback: queue a notify; at most one write is in flight and one seq pending."""
        if 0 < seq <= self._own_upto:
            return  # this socket's own sends: its client has them from the `sent` replies
        if seq == 0:
            seq = max(self._sent_seq, 0)  # "re-check": send the last known head again
            self._sent_seq = -1
        self._pending_seq = max(self._pending_seq, seq)
        if self._notify_task is None and not self._closed:
            self._notify_task = asyncio.create_task(self._flush_notifies())

    async def _flush_notifies(self) -> None:
        try:
            while self._pending_seq > self._sent_seq and not self._closed:
                seq = self._sent_seq = self._pending_seq
                await self._write({"t": "notify", "seq": seq})
        finally:
            self._notify_task = None

    def going_away(self) -> None:
        """Node shutdown: 1001 tells the client to reconnect (to another node); nothing is lost."""
        if not self._closed:
            self.close(1001, "server shutting down")

    def kick(self, reason: str) -> None:
        """Service callback (login policy ``single``): a newer session took over; say so, then close.

        A client that gets ``kicked`` should not reconnect by itself, or the two sessions take turns.
        """
        self._send_frame({"t": "kicked", "reason": reason,
                          "message": "this session was replaced by a newer login of the same user"})
        self.close(CLOSE_KICKED, "kicked")

    # -- plumbing -------------------------------------------------------------------------------------

    def _send_frame(self, frame: dict[str, Any]) -> None:
        """Fire-and-forget write for the few frames sent right before closing."""
        if self._closed:
            return
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            self.write_message(encode_frame(frame, binary=self.binary), binary=self.binary)

    async def _write(self, frame: dict[str, Any]) -> None:
        """Write one frame; a peer that does not take it in time is disconnected as a slow consumer."""
        if self._closed:
            return
        try:
            await asyncio.wait_for(
                self.write_message(encode_frame(frame, binary=self.binary), binary=self.binary),
                self.settings_.ws_write_timeout_secs,
            )
        except tornado.websocket.WebSocketClosedError:
            pass
        except TimeoutError:
            log.warning("ws %s: peer not reading for %.0f s; closing (slow consumer)", self._who(),
                        self.settings_.ws_write_timeout_secs)
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")

    def _who(self) -> str:
        return f"{self.principal.user}/{self.principal.device}" if self.principal else "unauthenticated"

    def on_close(self) -> None:
        self._closed = True
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        if self._notify_task is not None:
            self._notify_task.cancel()
        if self.principal is not None:
            self.service.disconnect(self.principal, self)


async def _failed(error: ImError) -> dict[str, Any]:
    raise error
