"""WebSocket transport (``/ws``): JSON text frames or msgpack binary frames, one schema.

The socket only ever receives a body-less ``notify`` from the server unprompted; everything else is a
reply to a client frame. Memory per socket is bounded however the peer behaves:
- frames are written without waiting; while the peer has not taken what was written (Tornado holds
  what its socket refused), its next frames are not read and notifies are coalesced: newer seqs
  overwrite the pending one;
- frames are served concurrently (a pull is not stuck behind the durable write of the client's own
  send, nor behind an acknowledgement's batch), but at most ``MAX_FRAMES_IN_FLIGHT`` per socket: beyond
  that the next frame is not read until one is answered, so a client that sends but never reads
  stalls itself, not the server. Sends are queued for writing in frame order, so one client's
  messages keep their order;
- a socket opened with ``echo=0`` is not notified of entries its own sends created: its client takes
  them from the ``sent`` replies (``sender_seq``), so a send costs no extra pull round trip. Skipping
  every notify up to the highest such seq is safe because a client that finds ``sender_seq`` does not
  directly follow the last seq it holds pulls (whatever came in between is then fetched);
- a backlog that the peer does not take within ``ws_write_timeout_secs`` closes the socket (4408). The
  client loses nothing: the messages wait in its inbox and it pulls them after reconnecting.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import tornado.httputil
import tornado.websocket

from config import Settings
from handlers.base import origin_allowed
from handlers.errors import error_frame
from handlers.ws_notify import SocketNotifies
from im.accounts.tokens import Principal, parse_bearer
from im.errors import AuthError, ImError, InvalidInput
from im.models import PullResult, Receipt
from im.protocol import (
    check_frame,
    encode_frame,
    frame_rid,
    load_frame,
    parse_ack,
    parse_pull,
    parse_read,
    parse_send,
    read_str,
)
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
        self._notifies = SocketNotifies(self._emit)
        # echo=0: this socket is not notified of the entries its own sends created.
        self._echo_own = True
        # Frames being served (their outcomes); the next frame is read only below MAX_FRAMES_IN_FLIGHT.
        self._in_flight: set[asyncio.Future[Any]] = set()
        # The newest frame written, and the task waiting for the peer to take a backlog (if any).
        self._last_write: asyncio.Future[None] | None = None
        self._draining: asyncio.Task[None] | None = None
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
        keep them (a JWT among them) for the socket's whole life."""
        self.request.headers = tornado.httputil.HTTPHeaders()
        self._headers = tornado.httputil.HTTPHeaders()

    async def _open(self) -> None:
        # Frames are small and latency is the point: with Nagle on (Tornado's default after the
        # upgrade), a reply written while the previous frame is unacknowledged waits for the peer's
        # delayed ACK.
        self.set_nodelay(True)
        self.binary = self.get_query_argument("format", "json") == "msgpack"
        self._echo_own = self.get_query_argument("echo", "1") != "0"
        try:
            self.service.check_client(self.request.remote_ip or "")
        except ImError as error:
            self._emit(error_frame(error))
            self.close(CLOSE_RATE_LIMITED, "rate limited")
            return
        header = self.request.headers.get("Authorization")
        if header:
            try:
                await self._authenticate(parse_bearer(header))
            except ImError as error:
                self._emit(error_frame(error))
                self.close(CLOSE_AUTH_TIMEOUT, "authentication failed")
            return
        loop = asyncio.get_running_loop()
        self._auth_timer = loop.call_later(self.settings_.ws_auth_timeout_secs, self._auth_timed_out)

    def _auth_timed_out(self) -> None:
        if self.principal is None and not self._closed:
            self._emit({"t": "error", "code": "auth_timeout", "message": "no valid auth frame in time"})
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

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        """Serve one frame. The common frames (a pull served from memory, a send to a known user, an
        acknowledgement) are started right here and return None: Tornado then reads the next frame at
        once. A returned coroutine is wrapped in a task, and the next frame is read only after it
        finished, two more turns of a busy event loop per frame; only frames that must wait get one."""
        self.binary = isinstance(message, bytes)
        rid = None
        try:
            frame = load_frame(message, max_bytes=self.settings_.max_frame_bytes)
            rid = frame_rid(frame)
            check_frame(frame)
        except ImError as error:
            self._emit_error(error, rid)  # echoed when the frame named a valid one
            return None
        if (self._draining is None and self.principal is not None and frame["t"] not in SERIAL_FRAMES
                and len(self._in_flight) < MAX_FRAMES_IN_FLIGHT):
            try:
                if self._start_now(frame, rid):
                    return None
            except ImError as error:
                self._emit_error(error, rid)
                return None
            except Exception as exc:
                self._emit_internal(rid, exc)
                return None
        return self._serve(frame, rid)

    def _start_now(self, frame: dict[str, Any], rid: Any) -> bool:
        """Start serving an authenticated frame without waiting; False when it must wait (a send whose
        checks need the store), and nothing was done."""
        principal = self.principal
        assert principal is not None
        kind = frame["t"]
        if kind == "send":
            request = parse_send(frame, max_text_chars=self.settings_.max_text_chars)
            outcome = self.service.queue_send_nowait(principal, request, before_notify=self._before_notify())
            if outcome is None:
                return False
        elif kind == "pull":
            after, limit = parse_pull(frame, default_limit=self.settings_.pull_default_limit,
                                      max_limit=self.settings_.pull_max_limit)
            page = self.service.pull_cached(principal, after=after, limit=limit)
            if page is not None:
                self._emit(_with_rid(_reply_frame(page, principal), rid))
                return True
            outcome = asyncio.ensure_future(self.service.pull(principal, after=after, limit=limit))
        else:
            outcome = asyncio.ensure_future(self._dispatch(frame))
        self._track(outcome, rid)
        return True

    async def _serve(self, frame: dict[str, Any], rid: Any) -> None:
        """Serve a frame that has to wait: for the peer to take its backlog, for a slot among the
        frames in flight, for authentication, or for the store's checks of a send (in frame order:
        the next frame is read only after this one is queued)."""
        if self._draining is not None:
            # The peer is not taking what was written to it: its next frames wait (backpressure).
            await asyncio.wait({self._draining})
        if frame["t"] in SERIAL_FRAMES or self.principal is None:
            outcome: asyncio.Future[Any] = asyncio.ensure_future(self._dispatch(frame))
            await asyncio.wait({outcome})
            self._reply(rid, outcome)
            return
        while len(self._in_flight) >= MAX_FRAMES_IN_FLIGHT:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
        try:
            if frame["t"] == "send":
                request = parse_send(frame, max_text_chars=self.settings_.max_text_chars)
                self._track(await self.service.queue_send(
                    self.principal, request, before_notify=self._before_notify()), rid)
            elif not self._start_now(frame, rid):
                raise AssertionError("only sends wait for their checks")
        except ImError as error:
            self._emit_error(error, rid)
        except Exception as exc:
            self._emit_internal(rid, exc)

    def _before_notify(self) -> Callable[[Receipt], None] | None:
        return None if self._echo_own else self._own_entry_stored

    def _track(self, outcome: asyncio.Future[Any], rid: Any) -> None:
        """A frame in flight: its reply is written by a done callback, not by a task per frame (a task
        per reply costs turns of the event loop that every other socket waits behind)."""
        self._in_flight.add(outcome)
        outcome.add_done_callback(functools.partial(self._reply, rid))

    def _reply(self, rid: Any, outcome: asyncio.Future[Any]) -> None:
        """Write a frame's reply once its outcome is known; an error becomes an error frame, never a
        closed socket."""
        self._in_flight.discard(outcome)
        if outcome.cancelled():
            return
        error = outcome.exception()
        if error is None:
            self._emit(_with_rid(_reply_frame(outcome.result(), self.principal), rid))
        elif isinstance(error, ImError):
            self._emit_error(error, rid)
        else:
            self._emit_internal(rid, error)

    def _emit_error(self, error: ImError, rid: Any) -> None:
        log.info("ws %s: %s (%s)", self._who(), error.code, error.message)
        self._emit(error_frame(error, rid=rid))

    def _emit_internal(self, rid: Any, error: BaseException) -> None:
        # Loop edge: one frame's unexpected failure must not kill a healthy connection.
        log.error("ws %s: unexpected error serving a frame", self._who(), exc_info=error)
        self._emit(_with_rid({"t": "error", "code": "internal",
                              "message": "the server failed to serve this frame"}, rid))

    async def _dispatch(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Frames other than sends and pulls (and every frame before authentication)."""
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
        service = self.service
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
        self._notifies.own_entry(receipt.seqs.get(self.principal.user, 0))

    def inbox_changed(self, seq: int) -> None:
        """Hub callback: notify now, or, while the peer is not taking what was written to it, once it
        has; seq 0 asks for a re-check of the stored head."""
        if seq != 0:
            self._notifies.changed(seq, held=self._draining is not None)
        elif not self._closed and self.principal is not None:
            principal = self.principal
            self._notifies.recheck(lambda: self.service.inbox_head(principal),
                                   held=lambda: self._draining is not None, who=self._who())

    def going_away(self) -> None:
        """Node shutdown: 1001 tells the client to reconnect (to another node); nothing is lost."""
        if not self._closed:
            self.close(1001, "server shutting down")

    def kick(self, reason: str) -> None:
        """Service callback (login policy ``single``): a newer session took over; say so, then close.

        A client that gets ``kicked`` should not reconnect by itself, or the two sessions take turns.
        """
        self._emit({"t": "kicked", "reason": reason,
                    "message": "this session was replaced by a newer login of the same user"})
        self.close(CLOSE_KICKED, "kicked")

    # -- plumbing -------------------------------------------------------------------------------------

    def _emit(self, frame: dict[str, Any]) -> None:
        """Write one frame without waiting for the peer to take it.

        Nearly always the bytes go straight into the socket. When they cannot (the peer's receive window
        is full), one drain watcher per socket waits until it has taken them; meanwhile the peer's frames
        are not read and notifies wait (coalesced), so what is held for a slow peer stays bounded, and a
        peer that takes nothing for ``ws_write_timeout_secs`` is closed as a slow consumer.
        """
        if self._closed:
            return
        try:
            written = self.write_message(encode_frame(frame, binary=self.binary), binary=self.binary)
        except tornado.websocket.WebSocketClosedError:
            return
        written.add_done_callback(_outcome_seen)
        self._last_write = written
        if self._draining is None and self._backed_up():
            self._draining = asyncio.create_task(self._drain())

    def _backed_up(self) -> bool:
        """Whether written bytes are still waiting for the peer (Tornado buffers what the socket refused)."""
        connection = self.ws_connection
        return connection is not None and connection.stream is not None and connection.stream.writing()

    async def _drain(self) -> None:
        timeout = self.settings_.ws_write_timeout_secs
        try:
            while self._backed_up() and not self._closed and self._last_write is not None:
                done, _ = await asyncio.wait({self._last_write}, timeout=timeout)
                if not done:
                    log.warning("ws %s: peer not reading for %.0f s; closing (slow consumer)", self._who(),
                                timeout)
                    self.close(CLOSE_SLOW_CONSUMER, "slow consumer")
                    return
        finally:
            self._draining = None
        if not self._closed:
            self._notifies.flush()

    def _who(self) -> str:
        return f"{self.principal.user}/{self.principal.device}" if self.principal else "unauthenticated"

    def on_close(self) -> None:
        self._closed = True
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        if self._draining is not None:
            self._draining.cancel()
        self._notifies.close()
        if self.principal is not None:
            self.service.disconnect(self.principal, self)


def _reply_frame(result: Any, principal: Principal | None) -> dict[str, Any]:
    """The frame answering a served frame: a receipt is ``sent``, a page is ``msgs``."""
    if isinstance(result, Receipt):
        assert principal is not None
        return {"t": "sent", **result.to_dict(sender=principal.user)}
    if isinstance(result, PullResult):
        return {"t": "msgs", **result.to_dict()}
    return result


def _with_rid(frame: dict[str, Any], rid: Any) -> dict[str, Any]:
    if rid is not None:
        frame["rid"] = rid
    return frame


def _outcome_seen(written: asyncio.Future[None]) -> None:
    """Tornado's write task fails when the socket closed under it; that is seen here, not logged as a
    never-retrieved exception (the socket's close is handled by ``on_close``)."""
    if not written.cancelled():
        written.exception()
