"""Client adapters for the load generator: our SDK, the bare Tornado baseline, python-socketio.

Every adapter has the same shape, so a scenario is written once and run against all three servers:
``open()`` connects, ``send(to, body)`` returns once the server accepted the message (for ours: once it
is durable), ``join(group)`` enters a group, and every message pushed to the client reaches
``on_message(sender, body)``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import msgpack
import tornado.httpclient
import tornado.websocket

from imclient import Client

__all__ = ["BenchClient", "ImTarget", "SioTarget", "Target", "TornadoTarget", "make_target"]

# (sender, body, notify): ``notify`` is (transport, ms from the notify reaching the SDK to this
# callback) for our server, None when there was no notify before the message (or for the baselines).
OnMessage = Callable[[str, str, "tuple[str, float] | None"], None]
# Notifies remembered per client while their messages are pulled (a bound: one never matched is dropped).
NOTIFY_MEMORY = 256
# One send attempt of the baselines waits this long for its acknowledgement.
BASELINE_CALL_TIMEOUT_SECS = 30.0


class Target(Protocol):
    user: str

    async def open(self) -> None: ...
    async def send(self, to: str, body: str) -> None: ...
    async def send_group(self, group: str, body: str) -> None: ...
    async def join(self, group: str) -> None: ...
    async def close(self) -> None: ...


class BenchClient(Client):
    """The SDK client, logged in with a token the benchmark minted instead of a password.

    Why: ``Client.start()`` always logs in with the password, and each login costs the server one
    scrypt hash (~50 ms of CPU by design, against brute force). 15,000 idle connections would spend
    ~12 CPU-minutes hashing before anything is measured. Everything after login (connect, auth frame,
    notify, pull, ack, long-poll, send with retries) is the SDK's own code.
    """

    def __init__(self, *args: Any, token: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bench_token = token

    async def _login(self) -> None:
        self.token = self._bench_token


class ImTarget:
    """One user (one device) on our server through the SDK, WebSocket or long-poll."""

    def __init__(
        self,
        base_url: str,
        user: str,
        token: str,
        *,
        transport: str,
        device: str,
        on_message: OnMessage,
        http: tornado.httpclient.AsyncHTTPClient,
        poll_timeout_secs: int | None = None,
    ) -> None:
        self.user = user
        # (seq, monotonic ns, transport) of the notifies not yet matched to a delivered message.
        notifies: deque[tuple[int, int, str]] = deque(maxlen=NOTIFY_MEMORY)

        def noted(seq: int, via: str) -> None:
            notifies.append((seq, time.monotonic_ns(), via))

        def deliver(message: dict[str, Any]) -> None:
            # Notify-to-receive: the earliest notify that covers this seq (seqs only grow, so older
            # notifies are of earlier entries). None: the message came in a pull before its notify.
            now_ns = time.monotonic_ns()
            seq = message.get("seq", 0)
            while notifies and notifies[0][0] < seq:
                notifies.popleft()
            notify = (notifies[0][2], (now_ns - notifies[0][1]) / 1e6) if notifies else None
            # Not deliveries: the sender's own copy in its inbox, and delivered receipts (entries of kind
            # "receipt", whose body is a status, not a chat message).
            if message.get("from") != user and message.get("kind") != "receipt":
                on_message(message["from"], message["body"], notify)

        self.client = BenchClient(
            base_url,
            user,
            "unused-password",
            token=token,
            device=device,
            transport=transport,
            on_message=deliver,
            on_notify=noted,
            http=http,
            **({"poll_timeout_secs": poll_timeout_secs} if poll_timeout_secs else {}),
        )

    async def open(self) -> None:
        # Returns once a transport is up: the auth frame answered on WebSocket, the first poll (which
        # does not wait) answered on long-poll; the long-poll client then parks its next poll.
        await self.client.start(timeout_secs=120.0)

    async def send(self, to: str, body: str) -> None:
        await self.client.send(to, body)

    async def send_group(self, group: str, body: str) -> None:
        await self.client.send_group(group, body)

    async def join(self, group: str) -> None:
        return None  # membership is set through the group API

    async def close(self) -> None:
        await self.client.close()


class TornadoTarget:
    """A raw Tornado WebSocket client of ``bench.bare_tornado``: msgpack frames, acks matched by rid."""

    def __init__(self, base_url: str, user: str, *, on_message: OnMessage) -> None:
        self.user = user
        self._url = base_url.replace("http://", "ws://") + f"/ws?user={user}"
        self._on_message = on_message
        self._conn: tornado.websocket.WebSocketClientConnection | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._rids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._conn = await tornado.websocket.websocket_connect(self._url)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._conn is not None
        while True:
            message = await self._conn.read_message()
            if message is None:
                break
            frame = msgpack.unpackb(message)
            if frame.get("t") == "msg":
                self._on_message(frame["from"], frame["body"], None)
            else:
                future = self._pending.pop(frame.get("rid", 0), None)
                if future is not None and not future.done():
                    future.set_result(None)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("closed"))

    async def _call(self, frame: dict[str, Any]) -> None:
        assert self._conn is not None
        rid = next(self._rids)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        await self._conn.write_message(msgpack.packb({**frame, "rid": rid}), binary=True)
        await asyncio.wait_for(future, BASELINE_CALL_TIMEOUT_SECS)

    async def send(self, to: str, body: str) -> None:
        await self._call({"t": "send", "to": to, "body": body})

    async def send_group(self, group: str, body: str) -> None:
        await self._call({"t": "send", "to": "g:" + group, "body": body})

    async def join(self, group: str) -> None:
        await self._call({"t": "join", "g": group})

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=5)


class SioTarget:
    """A python-socketio client (WebSocket transport) of ``bench.sio_server``."""

    def __init__(self, base_url: str, user: str, *, on_message: OnMessage) -> None:
        import socketio  # the bench extra; only needed when this baseline runs

        self.user = user
        self._url = base_url
        self._sio = socketio.AsyncClient(reconnection=False)
        self._sio.on("msg", lambda data: on_message(data["from"], data["body"], None))

    async def open(self) -> None:
        await self._sio.connect(self._url, auth={"user": self.user}, transports=["websocket"])

    async def send(self, to: str, body: str) -> None:
        await self._sio.call("send", {"to": to, "body": body}, timeout=BASELINE_CALL_TIMEOUT_SECS)

    async def send_group(self, group: str, body: str) -> None:
        await self._sio.call("send", {"to": "g:" + group, "body": body}, timeout=BASELINE_CALL_TIMEOUT_SECS)

    async def join(self, group: str) -> None:
        await self._sio.call("join", {"g": group}, timeout=BASELINE_CALL_TIMEOUT_SECS)

    async def close(self) -> None:
        await self._sio.disconnect()


def make_target(
    kind: str,
    base_url: str,
    client: dict[str, Any],
    *,
    on_message: OnMessage,
    http: tornado.httpclient.AsyncHTTPClient | None = None,
) -> Target:
    """Build the adapter named by ``kind`` for one client of a spec (``user``, and for ours ``token``,
    ``transport``, ``device``)."""
    if kind == "im":
        assert http is not None
        return ImTarget(
            base_url,
            client["user"],
            client["token"],
            transport=client.get("transport", "ws"),
            device=client.get("device", "bench"),
            on_message=on_message,
            http=http,
            poll_timeout_secs=client.get("poll_timeout_secs"),
        )
    if kind == "tornado":
        return TornadoTarget(base_url, client["user"], on_message=on_message)
    if kind == "sio":
        return SioTarget(base_url, client["user"], on_message=on_message)
    raise ValueError(f"unknown target {kind!r}")
