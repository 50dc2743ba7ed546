"""The async client: one seq cursor, one live transport, messages handed over in seq order, once.

How it keeps the server's promises on the client side:
- **Notify, then pull**: a ``notify`` only wakes the pull loop; every (re)connect pulls too, so a lost
  notify or a dropped connection delays a message, never loses it.
- **Exactly once for the caller**: entries with ``seq <= last_seq`` are dropped; ``gap`` (entries
  trimmed before this device got them, or a new inbox ``epoch``) resets the cursor and is reported to
  ``on_gap`` so the application can reload history.
- **Sends are idempotent**: every send carries a ``client_msg_id`` and is retried with the same id on a
  timeout, a 503/429 or a lost connection; the server answers a retry with the original receipt.
- **Transports**: WebSocket (msgpack frames) when it works, HTTP long-poll (JSON) when it does not
  (a proxy that refuses upgrades); in ``auto`` mode the fallback is automatic and WebSocket is tried
  again now and then. Node URLs are rotated on failure with jittered, capped backoff.

Per-client cost is one small task (the pull loop on WebSocket, the poll loop on long-poll), and no
per-message allocations beyond the decoded frames. WebSocket frames are handled in the callback that
read them, and a call's timeout is a timer, not a ``wait_for``: every event-loop turn between a frame's
arrival and the code waiting for it is latency when the loop is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgpack
import tornado.httpclient
import tornado.websocket

from imclient import keepalive
from imclient.backoff import backoff_delay
from imclient.errors import ApiError, ClientClosed, ConnectionFailed, ImClientError, SendFailed
from imclient.http import RestClient

__all__ = ["TRANSPORTS", "Client"]

log = logging.getLogger(__name__)

TRANSPORTS = ("auto", "ws", "longpoll")
# Long-poll wait asked of the server: below common proxy and NAT idle limits, like the server default.
POLL_TIMEOUT_SECS = 25
# Extra time on top of the poll wait before the client gives up on an answer.
POLL_GRACE_SECS = 10.0
# After a failed WebSocket upgrade, stay on long-poll this long before trying the upgrade again.
WS_RETRY_AFTER_SECS = 60.0
# One attempt of a send (or a pull frame) waits this long for its answer before retrying.
CALL_TIMEOUT_SECS = 10.0
# How long a whole send may take, retries included, before SendFailed.
SEND_DEADLINE_SECS = 60.0
# Keep-alive pings from the client side find a silently dead server (the server pings too).
WS_PING_INTERVAL_SECS = 20.0
WS_PING_TIMEOUT_SECS = 20.0
CONNECT_TIMEOUT_SECS = 10.0
# Acks on WebSocket are coalesced to at most one per this interval: each ack costs the server a cursor
# write, a trim and delivered receipts, so acking every pull under load multiplies its store work. The
# cursor stays exact (duplicates are dropped by seq); only trimming and "delivered" lag by this much.
ACK_INTERVAL_SECS = 1.0
# Entries per pull: large pages keep round trips few when a client comes back from being offline.
PULL_LIMIT = 200
# A new SDK-owned HTTP client: one slot for the long-poll, the rest for concurrent sends.
OWN_HTTP_MAX_CLIENTS = 8

# Error codes meaning "the token is no good any more": log in again and retry.
_RELOGIN_CODES = frozenset({"missing_token", "invalid_token", "token_expired", "token_revoked",
                            "unauthenticated", "unauthorized"})
# Error frames over WebSocket carry no HTTP status; these codes are worth retrying.
_RETRYABLE_CODES = frozenset({"store_unavailable", "unavailable", "rate_limited", "too_many_connections"})

MessageCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
GapCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
# (seq, transport): a notify that wakes the pull arrived (WebSocket), or a poll answer with entries
# (long-poll, whose answer is its own notify). For measuring notify-to-delivery time; must be cheap.
NotifyHook = Callable[[int, str], None]


class _Relogin(ImClientError):
    """The token was refused; get a new one and carry on."""


class _Kicked(ImClientError):
    """A newer session of this user took over (login policy ``single``): do not reconnect."""


def _retryable(error: ApiError) -> bool:
    return error.retryable or error.code in _RETRYABLE_CODES


def _ws_url_of(base_url: str) -> str:
    scheme, _, rest = base_url.rstrip("/").partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest + "/ws"


class _WsConnection:
    """One open WebSocket: replies matched to calls by ``rid``, everything else to the client."""

    __slots__ = ("closed", "conn", "ended", "pending", "rids")

    def __init__(self) -> None:
        self.conn: tornado.websocket.WebSocketClientConnection | None = None  # set once connected
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.rids = itertools.count(1)
        self.closed = False
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # the socket closed

    def write(self, frame: dict[str, Any]) -> None:
        if self.closed or self.conn is None:
            raise ConnectionFailed("WebSocket is closed")
        try:
            self.conn.write_message(msgpack.packb(frame, use_bin_type=True), binary=True)
        except tornado.websocket.WebSocketClosedError:
            raise ConnectionFailed("WebSocket is closed") from None

    async def call(self, frame: dict[str, Any], timeout_secs: float) -> dict[str, Any]:
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
        future = self.pending.get(frame.get("rid"))  # type: ignore[arg-type]
        if future is None or future.done():
            return False
        future.set_result(frame)
        return True

    def fail_all(self) -> None:
        self.closed = True
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionFailed("WebSocket closed"))
        self.pending.clear()
        if not self.ended.done():
            self.ended.set_result(None)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _time_out(future: asyncio.Future[dict[str, Any]], message: str) -> None:
    if not future.done():
        future.set_exception(ConnectionFailed(message))


class Client:
    """An IM client for one user and device.

    ``urls`` are the base URLs of the nodes (``http://127.0.0.1:8888``); any node serves any user, so
    on a failure the client moves on to the next one. ``on_message`` receives every inbox entry once,
    in seq order (the user's own sent messages included, as they are in the inbox: on a WebSocket they
    are taken from the send's receipt instead of being pulled back); it may be a plain
    function or a coroutine function, and an exception from it is logged, not retried. ``after``
    restores a cursor saved from an earlier run (``last_seq``). ``on_notify(seq, transport)``, if
    given, is called when a notify that wakes a pull arrives (or a long-poll answer with entries): the
    benchmark times notify-to-delivery with it.

    Call :meth:`start` (logs in, registers first if ``register``, connects) and :meth:`close`.
    """

    def __init__(
        self, urls: str | Sequence[str], user: str, password: str, *, device: str = "default",
        on_message: MessageCallback | None = None, on_gap: GapCallback | None = None,
        transport: str = "auto", ws_url: str | None = None, register: bool = False, after: int = 0,
        poll_timeout_secs: int = POLL_TIMEOUT_SECS, pull_limit: int = PULL_LIMIT,
        http: tornado.httpclient.AsyncHTTPClient | None = None, rand: random.Random | None = None,
        token: str | None = None, ack_interval_secs: float = ACK_INTERVAL_SECS,
        on_notify: NotifyHook | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}")
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("at least one node URL is needed")
        self.user = user
        self.device = device
        self._password = password
        self.on_message = on_message
        self.on_gap = on_gap
        self.on_notify = on_notify
        self.transport = transport
        self.ws_url = ws_url
        self._register = register
        self.last_seq = after
        self.epoch: str | None = None
        self.poll_timeout_secs = poll_timeout_secs
        self.pull_limit = pull_limit
        self.ack_interval_secs = ack_interval_secs
        self._acked_seq = after
        self._ack_timer: asyncio.TimerHandle | None = None
        self._own_http = http is None
        self.rest = RestClient(http or tornado.httpclient.AsyncHTTPClient(
            force_instance=True, max_clients=OWN_HTTP_MAX_CLIENTS))
        self._rand = rand or random.Random()
        self._node = 0
        # A token obtained elsewhere (a benchmark mints them: each login costs the server one scrypt
        # hash by design); when it is refused the client logs in with the password, if it has one.
        self.token: str | None = token
        #: The transport in use right now: "ws", "longpoll" or None while disconnected.
        self.connected_via: str | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.duplicates_dropped = 0
        #: Why the client stopped by itself (e.g. "kicked", "bad_credentials"); None while running.
        self.stopped_reason: str | None = None
        self._ws: _WsConnection | None = None
        self._wake = asyncio.Event()
        # The long-poll's own keep-alive connection, and those of sends without a WebSocket (see
        # imclient/keepalive.py).
        self._poll = keepalive.KeepAliveConnection()
        self._sends = keepalive.KeepAlivePool()
        # One delivery path at a time (pull replies, own sends), so on_message sees seq order.
        self._delivering = asyncio.Lock()
        self._closing = False
        self._ws_retry_at = 0.0
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.urls[self._node]

    async def start(self, *, timeout_secs: float = 30.0) -> None:
        """Register (if asked) and log in, then connect; returns once a transport is up.

        Raises :class:`ApiError` for refused credentials (``bad_credentials``) and
        :class:`ConnectionFailed` when no node could be reached within ``timeout_secs``.
        """
        deadline = time.monotonic() + timeout_secs
        if self.token is None:
            await self._with_rotation(self._login, deadline)
        self._task = asyncio.create_task(self._run(), name=f"imclient:{self.user}")
        remaining = max(0.1, deadline - time.monotonic())
        try:
            await asyncio.wait_for(self.connected.wait(), remaining)
        except TimeoutError:
            await self.close()
            raise ConnectionFailed(f"no node reachable within {timeout_secs:.0f} s") from None

    def _ack_soon(self) -> None:
        """Ack ``last_seq`` now, or at the end of the current ack interval (coalescing)."""
        if self.ack_interval_secs <= 0:
            self._flush_ack()
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(self.ack_interval_secs, self._flush_ack)

    def _flush_ack(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        ws = self._ws
        if ws is None or ws.closed or self.last_seq <= self._acked_seq:
            return
        with contextlib.suppress(ConnectionFailed):
            ws.write({"t": "ack", "upto": self.last_seq})  # its reply is ignored
            self._acked_seq = self.last_seq

    async def close(self) -> None:
        """Stop: the transport is closed and pending calls fail with :class:`ClientClosed`."""
        self._flush_ack()
        self._closing = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            ws.close()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._poll.close()
        self._sends.close()
        if self._own_http:
            self.rest.http.close()

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sending --------------------------------------------------------------------------------------

    async def send(self, to: str, body: str, *, client_msg_id: str | None = None,
                   deadline_secs: float = SEND_DEADLINE_SECS) -> dict[str, Any]:
        """Send a one-to-one message; return the receipt once the server stored it.

        Retried with the same ``client_msg_id`` until ``deadline_secs``; a retry of a message that was
        in fact stored returns the original receipt with ``duplicate: true``.
        """
        return await self._send({"to": to, "body": body}, client_msg_id, deadline_secs)

    async def send_group(self, group: str, body: str, *, client_msg_id: str | None = None,
                         deadline_secs: float = SEND_DEADLINE_SECS) -> dict[str, Any]:
        """Send to a group (servers with the group API); retried like :meth:`send`."""
        return await self._send({"group": group, "body": body}, client_msg_id, deadline_secs)

    async def _send(self, fields: dict[str, Any], client_msg_id: str | None,
                    deadline_secs: float) -> dict[str, Any]:
        cmid = client_msg_id or uuid.uuid4().hex
        payload = {**fields, "client_msg_id": cmid}
        deadline = time.monotonic() + deadline_secs
        for attempt in itertools.count():
            if self._closing:
                raise ClientClosed("client closed while sending")
            timeout = min(CALL_TIMEOUT_SECS, max(0.1, deadline - time.monotonic()))
            try:
                ws = self._ws
                if ws is not None and not ws.closed:
                    reply = await ws.call({"t": "send", **payload}, timeout)
                    reply.pop("t", None)
                    reply.pop("rid", None)
                    await self._own_sent(reply, payload)
                    return reply
                # Safe to send twice (it carries its client_msg_id): a keep-alive connection may be used.
                return await self._sends.call_json("POST", self.base_url, "/api/v1/messages", body=payload,
                                                   token=await self._token(), timeout_secs=timeout)
            except ApiError as error:
                if error.code in _RELOGIN_CODES:
                    self.token = None
                elif not _retryable(error):
                    raise
                wait = error.retry_after_secs or backoff_delay(attempt, rand=self._rand)
                reason: Exception = error
            except ConnectionFailed as error:
                if self._ws is None:  # REST to this node failed: the next attempt tries another
                    self._rotate()
                wait, reason = backoff_delay(attempt, rand=self._rand), error
            if time.monotonic() + wait >= deadline:
                raise SendFailed(f"send not confirmed in {deadline_secs:.0f} s: {reason}", cmid)
            log.info("%s: send %s not confirmed (%s); retrying in %.2f s", self.user, cmid, reason, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    # -- other REST calls -----------------------------------------------------------------------------

    async def request(self, method: str, path: str, *, body: Any = None,
                      query: dict[str, Any] | None = None, timeout_secs: float = 30.0) -> Any:
        """An authenticated REST call (presence, history, groups...) to the current node; on a refused
        token it logs in again once, on a dead node it tries the next one. Other errors are raised."""
        deadline = time.monotonic() + timeout_secs

        async def once() -> Any:
            try:
                return await self.rest.call(self.base_url, method, path, body=body, query=query,
                                            token=await self._token(), timeout_secs=timeout_secs)
            except ApiError as error:
                if error.code not in _RELOGIN_CODES:
                    raise
                self.token = None
                return await self.rest.call(self.base_url, method, path, body=body, query=query,
                                            token=await self._token(), timeout_secs=timeout_secs)

        return await self._with_rotation(once, deadline)

    # -- connection loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            long_poll_worked = False
            try:
                await self._token()
                if self._ws_allowed():
                    ws = await self._open_ws()
                    if ws is not None:
                        await self._serve_ws(ws)
                        raise ConnectionFailed("WebSocket closed")
                long_poll_worked = await self._serve_long_poll()
                if long_poll_worked:
                    continue  # leaving long-poll to try the WebSocket again
                raise ConnectionFailed("long-poll failed")
            except _Kicked:
                self.stopped_reason = "kicked"
                log.warning("%s/%s: kicked by a newer session; not reconnecting", self.user, self.device)
                break
            except _Relogin:
                self.token = None
                continue
            except ApiError as error:
                if error.code == "bad_credentials":
                    self.stopped_reason = "bad_credentials"
                    log.error("%s: credentials refused; stopping", self.user)
                    break
                reason: Exception = error
            except (ConnectionFailed, OSError) as error:
                reason = error
            except Exception as error:  # a bug must not end the client silently
                log.exception("%s: connection loop failed", self.user)
                reason = error
            finally:
                if self.connected_via is not None:
                    # This round got through (a socket, or at least one poll): the next failure backs
                    # off from scratch, however many failures came before it.
                    attempt = 0
                self._set_disconnected()
            if self._closing:
                break
            if not long_poll_worked:
                self._ws_retry_at = 0.0  # the node is down, not the upgrade: try WebSocket first next time
            self._rotate()
            delay = backoff_delay(attempt, rand=self._rand)
            attempt += 1
            self.reconnects += 1
            log.info("%s: disconnected (%s); reconnecting to %s in %.2f s", self.user, reason,
                     self.base_url, delay)
            await asyncio.sleep(delay)
        self._set_disconnected()

    def _ws_allowed(self) -> bool:
        if self.transport == "longpoll":
            return False
        return self.transport == "ws" or time.monotonic() >= self._ws_retry_at

    def _set_connected(self, via: str) -> None:
        self.connected_via = via
        self.connected.set()

    def _set_disconnected(self) -> None:
        self.connected_via = None
        self.connected.clear()

    def _rotate(self) -> None:
        self._node = (self._node + 1) % len(self.urls)

    async def _with_rotation(self, call: Callable[[], Awaitable[Any]], deadline: float) -> Any:
        """Run ``call`` on the current node, moving to the next node on connection failures."""
        for attempt in itertools.count():
            try:
                return await call()
            except ConnectionFailed:
                self._rotate()
                delay = backoff_delay(attempt, rand=self._rand)
                if time.monotonic() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # -- auth -----------------------------------------------------------------------------------------

    async def _token(self) -> str:
        if self.token is None:
            await self._login()
        assert self.token is not None
        return self.token

    async def _login(self) -> None:
        if not self._password:
            raise ApiError(401, "bad_credentials", "the token was refused and there is no password to log in")
        if self._register:
            try:
                await self.rest.call(self.base_url, "POST", "/api/v1/users",
                                     body={"user": self.user, "password": self._password})
            except ApiError as error:
                if error.status != 409:  # already registered is fine
                    raise
            self._register = False
        reply = await self.rest.call(self.base_url, "POST", "/api/v1/tokens", body={
            "user": self.user, "password": self._password, "device": self.device})
        self.token = reply["token"]

    # -- WebSocket ------------------------------------------------------------------------------------

    async def _open_ws(self) -> _WsConnection | None:
        """Connect and authenticate; ``None`` means "use long-poll instead" (auto mode only)."""
        # echo=0: our own sends are not notified to this socket; _own_sent takes them from the receipts.
        url = (self.ws_url or _ws_url_of(self.base_url)) + "?format=msgpack&echo=0"
        request = tornado.httpclient.HTTPRequest(url, connect_timeout=CONNECT_TIMEOUT_SECS,
                                                 request_timeout=CONNECT_TIMEOUT_SECS)
        ws = _WsConnection()
        try:
            conn = await tornado.websocket.websocket_connect(
                request, ping_interval=WS_PING_INTERVAL_SECS, ping_timeout=WS_PING_TIMEOUT_SECS,
                max_message_size=16 * 1024 * 1024,
                on_message_callback=functools.partial(self._on_ws_frame, ws),
            )
        except (OSError, tornado.httpclient.HTTPClientError, tornado.websocket.WebSocketError,
                TimeoutError) as exc:
            if self.transport == "ws":
                raise ConnectionFailed(f"WebSocket upgrade failed: {exc}") from None
            log.info("%s: WebSocket unavailable at %s (%s); using long-poll", self.user, url, exc)
            self._ws_retry_at = time.monotonic() + WS_RETRY_AFTER_SECS
            return None
        # Small frames, latency first: no Nagle / delayed-ACK stalls (~40 ms). Tornado exposes the flag on
        # the connection's protocol object only.
        if conn.protocol is not None:
            conn.protocol.set_nodelay(True)
        ws.conn = conn
        try:
            await ws.call({"t": "auth", "token": await self._token()}, CALL_TIMEOUT_SECS)
        except ApiError as error:
            conn.close()
            await ws.ended
            if error.code in _RELOGIN_CODES:
                raise _Relogin(error.message) from None
            raise
        except BaseException:
            conn.close()
            ws.fail_all()
            raise
        return ws

    def _on_ws_frame(self, ws: _WsConnection, message: str | bytes | None) -> None:
        """Tornado's callback for every frame of ``ws`` (None: the socket closed)."""
        if message is None:
            ws.fail_all()
            self._wake.set()
            return
        try:
            frame = msgpack.unpackb(message, raw=False) if isinstance(message, bytes) else json.loads(message)
        except ValueError:
            log.warning("%s: undecodable frame dropped", self.user)
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("t")
        if kind == "notify":
            if isinstance(frame.get("seq"), int) and frame["seq"] > self.last_seq:
                self._wake.set()
                if self.on_notify is not None:
                    try:
                        self.on_notify(frame["seq"], "ws")
                    except Exception:  # an app hook must not close the socket (Tornado would)
                        log.exception("%s: on_notify failed", self.user)
        elif kind == "kicked":
            self.stopped_reason = "kicked"
        elif not ws.resolve(frame) and kind == "error":
            log.info("%s: error frame %s: %s", self.user, frame.get("code"), frame.get("message"))

    async def _serve_ws(self, ws: _WsConnection) -> None:
        """Pull on connect and after every notify, until the socket closes."""
        self._ws = ws
        self._set_connected("ws")
        self._wake.set()
        try:
            while not self._closing:
                await self._wake.wait()
                self._wake.clear()
                if ws.closed:
                    break
                while True:
                    reply = await ws.call({"t": "pull", "after": self.last_seq, "limit": self.pull_limit},
                                          CALL_TIMEOUT_SECS)
                    if not await self._absorb(reply):
                        break
                    if reply.get("messages"):
                        self._ack_soon()
                    if not reply.get("more"):
                        break
        except ApiError as error:
            if error.code in _RELOGIN_CODES:
                raise _Relogin(error.message) from None
            raise
        finally:
            self._flush_ack()  # what was delivered on this socket, before it goes
            self._ws = None
            ws.close()
            await ws.ended
        if self.stopped_reason == "kicked":
            raise _Kicked("kicked")

    # -- long-poll ------------------------------------------------------------------------------------

    async def _serve_long_poll(self) -> bool:
        """Poll until it fails (raises) or the WebSocket is worth another try (returns True)."""
        worked = False
        while not self._closing:
            if worked and self.transport == "auto" and time.monotonic() >= self._ws_retry_at:
                # The WebSocket is tried next: no idle connection left behind.
                self._poll.close()
                self._sends.close()
                return True
            # The first poll does not wait: it is the pull-on-connect, and it proves the node answers.
            wait_secs = self.poll_timeout_secs if worked else 0
            try:
                reply = await self._poll.get_json(
                    self.base_url, "/api/v1/poll", token=await self._token(),
                    query={"after": self.last_seq, "timeout": wait_secs, "limit": self.pull_limit},
                    timeout_secs=wait_secs + POLL_GRACE_SECS,
                )
            except ApiError as error:
                if error.code in _RELOGIN_CODES:
                    raise _Relogin(error.message) from None
                if error.code == "kicked":
                    raise _Kicked(error.message) from None
                raise
            if not worked:
                worked = True
                self._set_connected("longpoll")
            if self.on_notify is not None and isinstance(reply, dict) and reply.get("messages"):
                seqs = [m.get("seq") for m in reply["messages"]]
                self.on_notify(max((q for q in seqs if isinstance(q, int)), default=0), "longpoll")
            await self._absorb(reply)  # the next poll's `after` acknowledges what was delivered
        return worked

    # -- delivery -------------------------------------------------------------------------------------

    async def _own_sent(self, receipt: dict[str, Any], payload: dict[str, Any]) -> None:
        """Our socket is not notified of our own sends (``echo=0``): take the entry from its receipt when
        it directly follows the last seq held (no pull round trip); otherwise something else came in
        between, so pull (the pull fetches both, in order). While a delivery is under way (this send may
        come from inside ``on_message``) the entry is left to the pull as well: waiting for that delivery
        to end would wait for ourselves."""
        seq = receipt.get("sender_seq")
        if not isinstance(seq, int) or seq <= self.last_seq:
            return
        if self._delivering.locked() or seq != self.last_seq + 1 or receipt.get("duplicate"):
            self._wake.set()
            return
        async with self._delivering:  # free, so taken at once: nothing runs between the check and here
            self.last_seq = seq
            await self._call(self.on_message, {
                "seq": seq, "msg_id": receipt.get("msg_id"), "conv": receipt.get("conv"), "from": self.user,
                "to": receipt.get("to"), "kind": "text", "body": payload.get("body"),
                "client_msg_id": receipt.get("client_msg_id"), "ts": receipt.get("ts"),
            })
        self._ack_soon()

    async def _absorb(self, reply: dict[str, Any]) -> bool:
        """Hand the new entries of one pull reply to ``on_message`` in seq order; False if the reply
        asks for nothing more (an empty page)."""
        async with self._delivering:
            return await self._absorb_reply(reply)

    async def _absorb_reply(self, reply: dict[str, Any]) -> bool:
        epoch = reply.get("epoch")
        messages = reply.get("messages") or []
        if reply.get("gap") or (self.epoch is not None and epoch != self.epoch):
            await self._gap(reply, messages)
        self.epoch = epoch
        for message in messages:
            seq = message.get("seq")
            if not isinstance(seq, int) or seq <= self.last_seq:
                self.duplicates_dropped += 1
                continue
            self.last_seq = seq
            await self._call(self.on_message, message)
        nxt = reply.get("next")
        if isinstance(nxt, int) and nxt > self.last_seq:
            self.last_seq = nxt
        return bool(messages) or bool(reply.get("more"))

    async def _gap(self, reply: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        """The cursor cannot continue: restart it where the server serves from, and tell the app."""
        if reply.get("gap"):
            first = messages[0]["seq"] - 1 if messages else reply.get("next", 0)
        else:
            # A new epoch served "incrementally" from an old cursor: the seqs before it are another
            # inbox's. Start over from the beginning of this one.
            first = 0
            messages.clear()
            reply["more"] = True
        log.warning("%s: inbox gap (epoch %s -> %s); cursor %d -> %d", self.user, self.epoch,
                    reply.get("epoch"), self.last_seq, first)
        self.last_seq = first
        await self._call(self.on_gap, reply)

    async def _call(self, callback: Callable[[dict[str, Any]], Any] | None, arg: dict[str, Any]) -> None:
        if callback is None:
            return
        try:
            result = callback(arg)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("%s: callback failed", self.user)
