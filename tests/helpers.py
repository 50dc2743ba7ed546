"""Real clients for tests: HTTP through AsyncHTTPClient, WebSocket through tornado's websocket_connect.

Nothing here fakes the server or the store: tests talk to a running app like any client would.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

import msgpack
import tornado.httpclient
import tornado.httpserver
import tornado.websocket

from config import Settings
from im.runtime import Runtime
from im.storage.store import SEQ_DIGITS, Store, inbox_range

PASSWORD = "correct horse battery"
_ids = itertools.count(1)
T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T] | T], *, until: Callable[[T], object] = bool,
    timeout_secs: float = 5.0, interval_secs: float = 0.05, what: str = "",
) -> T:
    """Call ``check`` (plain or async) every ``interval_secs`` until ``until`` holds for its result
    (by default: the result is truthy); return that result.

    When ``timeout_secs`` pass first, raise AssertionError naming ``what`` and the last result, so a
    ``check`` that returns what it looked at (not just a bool) explains the failure by itself.
    """
    deadline = time.monotonic() + timeout_secs
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        value = cast(T, result)
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_secs:g} s: {what or 'the condition'}; last: {value!r}")
        await asyncio.sleep(interval_secs)


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def error_code(self) -> str | None:
        return self.body.get("error", {}).get("code") if isinstance(self.body, dict) else None


class Node:
    """One running server (runtime + HTTP server) on a loopback port."""

    def __init__(self, runtime: Runtime, server: tornado.httpserver.HTTPServer, port: int) -> None:
        self.runtime = runtime
        self.server = server
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.http = tornado.httpclient.AsyncHTTPClient(force_instance=True)

    @property
    def service(self):
        return self.runtime.service

    @classmethod
    async def start(cls, settings: Settings) -> Node:
        from server import build_http_server

        runtime = await Runtime.start(settings)
        server = build_http_server(runtime)
        server.listen(settings.port, "127.0.0.1")
        return cls(runtime, server, settings.port)

    async def stop(self) -> None:
        self.server.stop()
        await self.runtime.service.quiesce(5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.close_all_connections(), 5)
        self.http.close()
        await self.runtime.close()

    # -- HTTP -----------------------------------------------------------------------------------------

    async def request(
        self, method: str, path: str, *, json_body: Any = None, raw_body: bytes | None = None,
        token: str | None = None, query: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Response:
        url = self.base_url + path + ("?" + urlencode(query) if query else "")
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        body = raw_body if raw_body is not None else (None if json_body is None else json.dumps(json_body))
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        response = await self.http.fetch(
            url, method=method, body=body, headers=all_headers, raise_error=False, request_timeout=timeout,
            allow_nonstandard_methods=True,
        )
        try:
            parsed = json.loads(response.body) if response.body else None
        except ValueError:
            parsed = response.body
        return Response(response.code, parsed, dict(response.headers))

    async def register(self, user: str, password: str = PASSWORD) -> Response:
        return await self.request("POST", "/api/v1/users", json_body={"user": user, "password": password})

    async def login(self, user: str, password: str = PASSWORD, device: str | None = None) -> str:
        body = {"user": user, "password": password}
        if device:
            body["device"] = device
        response = await self.request("POST", "/api/v1/tokens", json_body=body)
        assert response.status == 201, response.body
        return response.body["token"]

    async def user(self, user: str, device: str | None = None) -> str:
        """Register ``user`` and return a token for it."""
        response = await self.register(user)
        assert response.status == 201, response.body
        return await self.login(user, device=device)

    async def send(self, token: str, to: str, body: str, client_msg_id: str | None = None) -> Response:
        return await self.request("POST", "/api/v1/messages", token=token, json_body={
            "to": to, "body": body, "client_msg_id": client_msg_id or f"c{next(_ids)}"})

    async def pull(self, token: str, after: int = 0, limit: int | None = None) -> Response:
        query: dict[str, Any] = {"after": after}
        if limit is not None:
            query["limit"] = limit
        return await self.request("GET", "/api/v1/inbox", token=token, query=query)

    async def ack(self, token: str, upto: int) -> Response:
        return await self.request("POST", "/api/v1/inbox/ack", token=token, json_body={"upto": upto})

    async def poll(self, token: str, after: int = 0, timeout: int = 5, limit: int | None = None) -> Response:
        query: dict[str, Any] = {"after": after, "timeout": timeout}
        if limit is not None:
            query["limit"] = limit
        return await self.request("GET", "/api/v1/poll", token=token, query=query, timeout=timeout + 15)

    # -- WebSocket ------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def ws(self, token: str | None = None, *, binary: bool = False, header_auth: bool = False,
                 origin: str | None = None, echo: bool = True) -> AsyncIterator[WsClient]:
        headers = {}
        if header_auth and token:
            headers["Authorization"] = f"Bearer {token}"
        if origin:
            headers["Origin"] = origin
        request = tornado.httpclient.HTTPRequest(self.ws_url + ("" if echo else "?echo=0"), headers=headers)
        conn = await tornado.websocket.websocket_connect(request)
        client = WsClient(conn, binary=binary)
        try:
            if token and not header_auth:
                reply = await client.call({"t": "auth", "token": token})
                assert reply.get("ok") is True, reply
            yield client
        finally:
            conn.close()


@contextlib.asynccontextmanager
async def running_node(settings: Settings) -> AsyncIterator[Node]:
    """A Node started with ``settings`` for the ``async with`` body, stopped after it."""
    node = await Node.start(settings)
    try:
        yield node
    finally:
        await node.stop()


class WsClient:
    """A WebSocket test client that keeps notifies apart from replies."""

    def __init__(self, conn: tornado.websocket.WebSocketClientConnection, *, binary: bool) -> None:
        self.conn = conn
        self.binary = binary
        self.notifies: asyncio.Queue[int] = asyncio.Queue()
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            message = await self.conn.read_message()
            if message is None:
                self.closed.set()
                return
            frame = msgpack.unpackb(message) if isinstance(message, bytes) else json.loads(message)
            if frame.get("t") == "notify":
                self.notifies.put_nowait(frame["seq"])
            else:
                self.replies.put_nowait(frame)

    async def send_raw(self, data: str | bytes) -> None:
        await self.conn.write_message(data, binary=isinstance(data, bytes))

    async def send_frame(self, frame: dict[str, Any]) -> None:
        if self.binary:
            await self.send_raw(msgpack.packb(frame))
        else:
            await self.send_raw(json.dumps(frame))

    async def reply(self, timeout: float = 10) -> dict[str, Any]:
        return await asyncio.wait_for(self.replies.get(), timeout)

    async def call(self, frame: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        await self.send_frame(frame)
        return await self.reply(timeout)

    async def notify(self, timeout: float = 10) -> int:
        return await asyncio.wait_for(self.notifies.get(), timeout)

    async def send(self, to: str, body: str, client_msg_id: str | None = None) -> dict[str, Any]:
        return await self.call({"t": "send", "to": to, "body": body,
                                "client_msg_id": client_msg_id or f"w{next(_ids)}"})

    async def pull(self, after: int, limit: int | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"t": "pull", "after": after}
        if limit is not None:
            frame["limit"] = limit
        return await self.call(frame)

    async def ack(self, upto: int) -> dict[str, Any]:
        return await self.call({"t": "ack", "upto": upto})


async def drain_inbox(node: Node, token: str, after: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Pull everything after ``after`` over REST; return the messages and the last seq."""
    messages: list[dict[str, Any]] = []
    while True:
        response = await node.pull(token, after=after, limit=500)
        assert response.status == 200, response.body
        messages.extend(response.body["messages"])
        after = response.body["next"]
        if not response.body["more"]:
            return messages, after


async def untrimmed_seqs(store: Store, user: str) -> list[int]:
    """The seqs of ``user``'s inbox that are not trimmed, read from the store itself: the archive's
    inbox keys of ``user`` above the inbox floor."""
    floor_doc = await store.trims.find_one({"_id": user})
    floor = floor_doc["trimmed"] if floor_doc else 0
    # Up to the highest seq a key can hold: every key of user's above the floor, whatever the counter says.
    docs = await store.messages.find(
        inbox_range(user, floor, 10**SEQ_DIGITS - 1), {"rcpt": {"$elemMatch": {"u": user}}},
    ).to_list(None)
    return sorted(d["rcpt"][0]["s"] for d in docs)
