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

:class:`Client` holds identity, settings and lifecycle, and delegates each concern to one part:

- :mod:`imclient.cursor` — the inbox cursor and delivery to ``on_message``;
- :mod:`imclient.state` — the cursor kept in a file between runs;
- :mod:`imclient.connection` — the connection loop (transport choice, reconnects, backoff);
- :mod:`imclient.ws_session` / :mod:`imclient.wsconn` — the WebSocket session, and calls matched to
  replies on one socket;
- :mod:`imclient.longpoll` — the long-poll session;
- :mod:`imclient.sender` — sends with retries.

Per-client cost is one small task (the pull loop on WebSocket, the poll loop on long-poll), and no
per-message allocations beyond the decoded frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import tornado.httpclient

from imclient import keepalive
from imclient.backoff import backoff_delay
from imclient.connection import ConnectionLoop
from imclient.cursor import GapCallback, InboxCursor, MessageCallback
from imclient.errors import ApiError, ConnectionFailed
from imclient.http import RestClient
from imclient.longpoll import LongPollSession
from imclient.policy import RELOGIN_CODES
from imclient.sender import Sender
from imclient.state import InboxPlaceFile
from imclient.ws_session import WsSession

__all__ = ["TRANSPORTS", "Client"]

TRANSPORTS = ("auto", "ws", "longpoll")
# Long-poll wait asked of the server: below common proxy and NAT idle limits, like the server default.
POLL_TIMEOUT_SECS = 25
# How long a whole send may take, retries included, before SendFailed.
SEND_DEADLINE_SECS = 60.0
# Acks on WebSocket are coalesced to at most one per this interval: each ack costs the server a cursor
# write, a trim and delivered receipts, so acking every pull under load multiplies its store work. The
# cursor stays exact (duplicates are dropped by seq); only trimming and "delivered" lag by this much.
ACK_INTERVAL_SECS = 1.0
# Entries per pull: large pages keep round trips few when a client comes back from being offline.
PULL_LIMIT = 200
# A WebSocket client that heard no notify for this long pulls anyway: a notify is a hint, and one that
# never came must delay a message by this much at most, never indefinitely (long-poll needs no such
# rule: each poll ends within its timeout and the next one asks again). 0 turns it off.
IDLE_PULL_SECS = 30.0
# A new SDK-owned HTTP client: one slot for the long-poll, the rest for concurrent sends.
OWN_HTTP_MAX_CLIENTS = 8

# (seq, transport): a notify that wakes the pull arrived (WebSocket), or a poll answer with entries
# (long-poll, whose answer is its own notify). For measuring notify-to-delivery time; must be cheap.
NotifyHook = Callable[[int, str], None]


class Client:
    """An IM client for one user and device.

    ``urls`` are the base URLs of the nodes (``http://127.0.0.1:8888``); any node serves any user, so
    on a failure the client moves on to the next one. ``on_message`` receives every inbox entry once,
    in seq order: messages to the user, the user's own sent messages (``from`` is the user; on a
    WebSocket they are taken from the send's receipt instead of being pulled back) and receipts of what
    the user sent (``kind: "receipt"``); it may be a plain function or a coroutine function, and an
    exception from it is logged, not retried.

    ``state_path`` names a JSON file that keeps this device's place in its inbox (cursor and epoch)
    between runs: read here when it exists (it wins over ``after``), rewritten atomically whenever the
    place moves. Without it ``after`` restores a cursor the caller saved (``last_seq``).
    ``on_notify(seq, transport)``, if given, is called when a notify that wakes a pull arrives (or a
    long-poll answer with entries): the benchmark times notify-to-delivery with it.

    Call :meth:`start` (logs in, registers first if ``register``, connects) and :meth:`close`, or
    :meth:`logout` to sign out as well.
    """

    def __init__(
        self, urls: str | Sequence[str], user: str, password: str, *, device: str = "default",
        on_message: MessageCallback | None = None, on_gap: GapCallback | None = None,
        transport: str = "auto", ws_url: str | None = None, register: bool = False, after: int = 0,
        poll_timeout_secs: int = POLL_TIMEOUT_SECS, pull_limit: int = PULL_LIMIT,
        http: tornado.httpclient.AsyncHTTPClient | None = None, rand: random.Random | None = None,
        token: str | None = None, ack_interval_secs: float = ACK_INTERVAL_SECS,
        on_notify: NotifyHook | None = None, state_path: str | os.PathLike[str] | None = None,
        idle_pull_secs: float = IDLE_PULL_SECS,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}")
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("at least one node URL is needed")
        self.user = user
        self.device = device
        self._password = password
        self.on_notify = on_notify
        self.transport = transport
        self.ws_url = ws_url
        self._register = register
        self.poll_timeout_secs = poll_timeout_secs
        self.pull_limit = pull_limit
        self.ack_interval_secs = ack_interval_secs
        self.idle_pull_secs = idle_pull_secs
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
        #: Why the client stopped by itself (e.g. "kicked", "bad_credentials"); None while running.
        self.stopped_reason: str | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # Asks the WebSocket session for a pull: set by a notify, a closed socket, or an own send.
        self._wake = asyncio.Event()
        # The long-poll's own keep-alive connection, and those of sends without a WebSocket (see
        # imclient/keepalive.py).
        self._poll = keepalive.KeepAliveConnection()
        self._sends = keepalive.KeepAlivePool()
        place_file = InboxPlaceFile(state_path, user, device) if state_path is not None else None
        self._cursor = InboxCursor(user, after, self._wake, on_message=on_message, on_gap=on_gap,
                                   place_file=place_file)
        self._ws_session = WsSession(self, self._cursor, self._wake)
        long_poll = LongPollSession(self, self._cursor, poll=self._poll, sends=self._sends)
        self._loop = ConnectionLoop(self, self._ws_session, long_poll)
        self._sender = Sender(self, self._ws_session, self._sends)

    # -- the inbox cursor's state, kept on the client for callers -------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the last entry handed over (save it, pass it back as ``after``)."""
        return self._cursor.last_seq

    @last_seq.setter
    def last_seq(self, value: int) -> None:
        self._cursor.last_seq = value

    @property
    def epoch(self) -> str | None:
        """The inbox epoch the cursor belongs to (a new one restarts the cursor)."""
        return self._cursor.epoch

    @epoch.setter
    def epoch(self, value: str | None) -> None:
        self._cursor.epoch = value

    @property
    def duplicates_dropped(self) -> int:
        """Entries received again (``seq <= last_seq``) and not handed over."""
        return self._cursor.duplicates_dropped

    @duplicates_dropped.setter
    def duplicates_dropped(self, value: int) -> None:
        self._cursor.duplicates_dropped = value

    @property
    def on_message(self) -> MessageCallback | None:
        """Called with every inbox entry, once, in seq order (may be changed while running)."""
        return self._cursor.on_message

    @on_message.setter
    def on_message(self, callback: MessageCallback | None) -> None:
        self._cursor.on_message = callback

    @property
    def on_gap(self) -> GapCallback | None:
        """Called with the reply when the cursor had to restart (``gap`` or a new ``epoch``)."""
        return self._cursor.on_gap

    @on_gap.setter
    def on_gap(self, callback: GapCallback | None) -> None:
        self._cursor.on_gap = callback

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
        self._task = asyncio.create_task(self._loop.run(), name=f"imclient:{self.user}")
        remaining = max(0.1, deadline - time.monotonic())
        try:
            await asyncio.wait_for(self.connected.wait(), remaining)
        except TimeoutError:
            await self.close()
            raise ConnectionFailed(f"no node reachable within {timeout_secs:.0f} s") from None

    async def close(self) -> None:
        """Stop: the transport is closed and pending calls fail with :class:`ClientClosed`."""
        await self._stop_connection()
        self._release_http()

    async def logout(self, *, all_devices: bool = False) -> dict[str, Any]:
        """Sign out this device (every token issued to it), or with ``all_devices`` every device of
        the user; then close. Returns the server's answer, ``{"signed_out": "device"|"all", "user",
        "device"?}``.

        The connection stops first: it would log in again with the password as soon as the server
        refuses its token. The client is closed whether or not the sign-out got through.
        """
        await self._stop_connection()
        try:
            reply = await self.request("DELETE", "/api/v1/tokens",
                                       query={"devices": "all"} if all_devices else None)
        finally:
            self._release_http()
        self.stopped_reason = "signed_out"
        self.token = None
        if isinstance(reply, dict):
            return reply
        # A server from before per-device sign-out answers 204 and has revoked every device's tokens.
        return {"signed_out": "all", "user": self.user}

    async def _stop_connection(self) -> None:
        """End the connection loop and its sockets; REST calls still work afterwards."""
        self._closing = True
        self._wake.set()
        self._ws_session.close()  # acks what was delivered first
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._poll.close()
        self._sends.close()

    def _release_http(self) -> None:
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
        return await self._sender.send({"to": to, "body": body}, client_msg_id, deadline_secs)

    async def send_group(self, group: str, body: str, *, client_msg_id: str | None = None,
                         deadline_secs: float = SEND_DEADLINE_SECS) -> dict[str, Any]:
        """Send to a group by its id (the ``group`` of ``POST /api/v1/groups``, not its name); retried
        like :meth:`send`. The receipt's ``seq`` is the sender's own, since a group has many inboxes."""
        return await self._sender.send({"group": group, "body": body}, client_msg_id, deadline_secs)

    async def _own_sent(self, receipt: dict[str, Any], payload: dict[str, Any]) -> None:
        """A WebSocket send's receipt: the cursor delivers its entry if it is next, and it is acked
        like a pulled one."""
        if await self._cursor.take_own_send(receipt, payload):
            self._ws_session.ack_soon()

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
                if error.code not in RELOGIN_CODES:
                    raise
                self.token = None
                return await self.rest.call(self.base_url, method, path, body=body, query=query,
                                            token=await self._token(), timeout_secs=timeout_secs)

        return await self._with_rotation(once, deadline)

    # -- state shared with the parts ------------------------------------------------------------------

    def _set_connected(self, via: str) -> None:
        self.connected_via = via
        self.connected.set()

    def _set_disconnected(self) -> None:
        self.connected_via = None
        self.connected.clear()

    def _rotate(self) -> None:
        """Move to the next node URL: any node serves any user."""
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
        """The current token, logging in first if there is none (every part asks here)."""
        if self.token is None:
            await self._login()
        assert self.token is not None
        return self.token

    async def _login(self) -> None:
        """Register (once, if asked) and log in with the password; a subclass may get tokens elsewhere."""
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
