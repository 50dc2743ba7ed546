"""The REST half of the SDK: one JSON request to one node, errors turned into SDK exceptions."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import tornado.httpclient
import tornado.iostream

from imclient.errors import ApiError, ConnectionFailed

__all__ = ["RestClient", "api_error"]


class RestClient:
    """JSON over HTTP through a tornado ``AsyncHTTPClient``.

    The HTTP client may be shared by many SDK clients (a benchmark runs hundreds in one process): pass
    one created with a large ``max_clients``, because every long-poll holds one of its slots.
    """

    def __init__(self, http: tornado.httpclient.AsyncHTTPClient) -> None:
        self.http = http

    async def call(
        self, base_url: str, method: str, path: str, *, body: Any = None, token: str | None = None,
        query: dict[str, Any] | None = None, timeout_secs: float = 30.0,
    ) -> Any:
        """Return the decoded JSON answer (``None`` for an empty one); raise :class:`ApiError` for an
        error status and :class:`ConnectionFailed` when the node cannot be reached."""
        url = base_url.rstrip("/") + path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT", "PATCH"):
            payload = b""
        try:
            response = await self.http.fetch(
                url, method=method, body=payload, headers=headers, raise_error=False,
                connect_timeout=min(timeout_secs, 10.0), request_timeout=timeout_secs,
                allow_nonstandard_methods=True,
            )
        except (OSError, tornado.iostream.StreamClosedError, tornado.httpclient.HTTPClientError) as exc:
            # Refused, reset, timed out, or closed before the answer (HTTPStreamClosedError): the
            # request may or may not have been processed, which is why sends carry client_msg_id.
            raise ConnectionFailed(f"{method} {url}: {exc}") from None
        if response.code == 599:  # tornado's "no HTTP answer": timeout or connection error
            raise ConnectionFailed(f"{method} {url}: {response.error}")
        data: Any = None
        if response.body:
            try:
                data = json.loads(response.body)
            except ValueError:
                data = None
        if response.code >= 400:
            raise api_error(response.code, data, response.headers.get("Retry-After"))
        return data


def api_error(status: int, data: Any, retry_after: str | None) -> ApiError:
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        error = {"code": "http_error", "message": f"HTTP {status}"}
    wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
    return ApiError(status, str(error.get("code", "error")), str(error.get("message", "")),
                    error.get("field"), retry_after_secs=wait)
