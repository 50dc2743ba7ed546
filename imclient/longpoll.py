"""The long-poll GET on a plain asyncio stream, so that cancelling it closes its socket at once.

tornado's ``AsyncHTTPClient`` cannot abort a request: a cancelled fetch keeps its connection open
until the server answers (up to the poll timeout) and then logs an error. A client that closes, or a
benchmark that stops hundreds of clients, must not leave waiting long-polls behind on the server, so
the one request that waits uses this minimal HTTP/1.1 client (GET, ``Connection: close``,
``Content-Length`` or read-to-end body); every other call goes through ``AsyncHTTPClient``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any
from urllib.parse import urlencode, urlsplit

from imclient.errors import ConnectionFailed
from imclient.http import api_error

__all__ = ["get_json"]

# Status line plus headers of an answer; anything longer is not our server.
MAX_HEADER_BYTES = 64 * 1024


async def get_json(base_url: str, path: str, *, query: dict[str, Any], token: str,
                   timeout_secs: float) -> Any:
    """GET ``base_url + path`` and decode the JSON answer; errors as in :meth:`RestClient.call`."""
    parts = urlsplit(base_url)
    secure = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if secure else 80)
    target = (parts.path.rstrip("/") + path) + "?" + urlencode(query)
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\nConnection: close\r\n\r\n"
    ).encode()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_secs):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl.create_default_context() if secure else None, limit=MAX_HEADER_BYTES)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status, headers = _parse_head(head)
            length = headers.get("content-length")
            body = await (reader.readexactly(int(length)) if length and length.isdigit() else reader.read())
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
        raise ConnectionFailed(f"GET {base_url}{path}: {type(exc).__name__}: {exc}") from None
    finally:
        if writer is not None:
            writer.close()
    data = None
    if body:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
    if status >= 400:
        raise api_error(status, data, headers.get("retry-after"))
    return data


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
