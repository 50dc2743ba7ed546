"""HTTP/1.1 on plain asyncio streams, kept alive between requests, closed at once when cancelled.

tornado's ``AsyncHTTPClient`` opens a connection per request and cannot abort one: a cancelled fetch
keeps its connection open until the server answers (up to the poll timeout) and then logs an error.
The two requests a client makes at every message go through this minimal client instead:

- the long-poll GET (:class:`KeepAliveConnection`): a client that closes, or a benchmark that stops
  hundreds of clients, must not leave waiting long-polls behind on the server;
- the sends of a client without a WebSocket (:class:`KeepAlivePool`, one connection per send in
  flight): a new connection per send would cost both ends a TCP (over HTTPS, also a TLS) handshake
  (what that saves: docs/performance.md).

Every other call goes through ``AsyncHTTPClient``. Requests sent here are safe to send twice (a GET,
or a send carrying its ``client_msg_id``): when a reused connection turns out closed by the server
before any answer, the request is sent again once, on a new connection.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any
from urllib.parse import urlencode, urlsplit

from imclient.errors import ConnectionFailed
from imclient.http import api_error

__all__ = ["KeepAliveConnection", "KeepAlivePool"]

# Status line plus headers of an answer; anything longer is not our server.
MAX_HEADER_BYTES = 64 * 1024
_NETWORK_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError)


class KeepAliveConnection:
    """One connection: at most one request at a time, reused while the server keeps it open. Any
    failure or cancellation closes it; the next request opens a new one."""

    def __init__(self) -> None:
        self._origin: tuple[str, str, int] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        #: TCP connections opened so far (a test and the curious can see the reuse).
        self.opened = 0

    async def get_json(self, base_url: str, path: str, *, query: dict[str, Any], token: str,
                       timeout_secs: float) -> Any:
        """GET ``base_url + path`` and decode the JSON answer; errors as in :meth:`RestClient.call`."""
        return await self.call_json("GET", base_url, path, query=query, token=token,
                                    timeout_secs=timeout_secs)

    async def call_json(self, method: str, base_url: str, path: str, *, token: str, timeout_secs: float,
                        query: dict[str, Any] | None = None, body: Any = None) -> Any:
        """One request that is safe to send twice, with an optional JSON body; the decoded JSON
        answer, errors as in :meth:`RestClient.call`."""
        parts = urlsplit(base_url)
        secure = parts.scheme == "https"
        origin = (parts.scheme, parts.hostname or "127.0.0.1", parts.port or (443 if secure else 80))
        target = parts.path.rstrip("/") + path + ("?" + urlencode(query) if query else "")
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        content = ""
        if body is not None:
            content = f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        request = (
            f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
            f"Accept: application/json\r\n{content}\r\n"
        ).encode() + payload
        try:
            async with asyncio.timeout(timeout_secs):
                reused = self._writer is not None and self._origin == origin and not self._writer.is_closing()
                if not reused:
                    await self._open(origin)
                try:
                    status, headers, body = await self._exchange(request)
                except (ConnectionError, asyncio.IncompleteReadError):
                    if not reused:
                        raise
                    # The server closed the idle connection as we reused it (nothing was answered):
                    # the request may be sent again, on a new connection.
                    await self._open(origin)
                    status, headers, body = await self._exchange(request)
        except _NETWORK_ERRORS as exc:
            self.close()
            raise ConnectionFailed(f"{method} {base_url}{path}: {type(exc).__name__}: {exc}") from None
        except BaseException:
            self.close()  # cancelled mid-request: the server must see the poll end now
            raise
        data = None
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                data = None
        if status >= 400:
            raise api_error(status, data, headers.get("retry-after"))
        return data

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._origin = None

    async def _open(self, origin: tuple[str, str, int]) -> None:
        self.close()
        scheme, host, port = origin
        self._reader, self._writer = await asyncio.open_connection(
            host, port, ssl=ssl.create_default_context() if scheme == "https" else None,
            limit=MAX_HEADER_BYTES)
        self._origin = origin
        self.opened += 1

    async def _exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status, headers = _parse_head(head)
        length = headers.get("content-length")
        if status in (204, 304):
            body = b""
        elif length is not None and length.isdigit():
            body = await reader.readexactly(int(length))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        else:
            body = await reader.read()  # no length: the body ends with the connection
            self.close()
            return status, headers, body
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body


class KeepAlivePool:
    """Keep-alive connections for concurrent requests: each request takes an idle connection or opens
    one, and gives it back when the answer is read whole. At most ``max_idle`` are kept idle."""

    def __init__(self, *, max_idle: int = 4) -> None:
        self._max_idle = max_idle
        self._idle: list[KeepAliveConnection] = []
        #: TCP connections opened so far, by every connection of the pool.
        self.opened = 0

    async def call_json(self, method: str, base_url: str, path: str, **kwargs: Any) -> Any:
        """:meth:`KeepAliveConnection.call_json` on a connection of the pool."""
        connection = self._idle.pop() if self._idle else KeepAliveConnection()
        before = connection.opened
        try:
            return await connection.call_json(method, base_url, path, **kwargs)
        finally:
            self.opened += connection.opened - before
            # An error answer (4xx, 5xx) was still read whole: the connection may be used again.
            if connection.is_open and len(self._idle) < self._max_idle:
                self._idle.append(connection)
            else:
                connection.close()

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/"):
        raise ValueError(f"not an HTTP answer: {lines[0][:60]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers
