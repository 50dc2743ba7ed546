"""Shared behaviour of the JSON API handlers: auth, body limits, CORS and the error body."""

from __future__ import annotations

import json
import logging
from typing import Any

import tornado.web

from config import Settings
from handlers.errors import http_status
from im.accounts.tokens import Principal, parse_bearer
from im.errors import AuthError, ImError, RateLimited, TooLarge
from im.ops.logging_setup import REQUEST_ID, request_id_from
from im.protocol import decode_json_body
from im.service import MessagingService

__all__ = ["ApiHandler", "origin_allowed"]

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "too_large", 500: "internal", 503: "unavailable"}


def origin_allowed(origin: str, *, host: str, allowed: list[str]) -> bool:
    """Same-host origins are always allowed; others only when listed in ``allowed_origins``."""
    origin = origin.rstrip("/")
    if origin in allowed or "*" in allowed:
        return True
    _, _, origin_host = origin.partition("://")
    return origin_host.lower() == host.lower()


def hard_body_limit(settings: Settings) -> int:
    """Bodies up to this size are drained and refused with a JSON 413 when over ``max_body_bytes``;
    beyond it the connection is closed without reading further (memory stays bounded either way)."""
    return max(16 * 1024 * 1024, settings.max_body_bytes * 4)


@tornado.web.stream_request_body
class ApiHandler(tornado.web.RequestHandler):
    """Base of the JSON API handlers.

    The body is streamed: ``prepare`` runs on the headers (limits and auth before any body is read),
    and a body over ``max_body_bytes`` is drained and dropped instead of buffered, so an oversized
    request gets a clear 413 without costing memory. Subclasses read the body with :meth:`json_body`.
    """

    service: MessagingService
    settings_: Settings

    def initialize(self, service: MessagingService, settings: Settings) -> None:
        self.service = service
        self.settings_ = settings
        self._principal: Principal | None = None
        self._auth_error: AuthError | None = None
        self._body = bytearray()
        self._body_too_large = False
        self._refused = False

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        # Here rather than in prepare(): error responses clear headers and call this again.
        self.set_header("X-Request-Id", self.request_id)

    @property
    def request_id(self) -> str:
        """The caller's ``X-Request-Id`` (when sane) or a new one; echoed and stamped on log records."""
        rid = self.__dict__.get("_request_id")
        if rid is None:
            rid = self._request_id = request_id_from(self.request.headers.get("X-Request-Id"))
        return rid

    async def prepare(self) -> None:
        """CORS, the body limit, the token (revocation needs the store), then the request limit: per
        device for a valid token, per address otherwise."""
        REQUEST_ID.set(self.request_id)
        origin = self.request.headers.get("Origin")
        allowed = self.settings_.allowed_origin_list
        if origin and origin_allowed(origin, host=self.request.host, allowed=allowed):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")
        declared = self.request.headers.get("Content-Length", "0")
        self._body_too_large = declared.isdigit() and int(declared) > self.settings_.max_body_bytes
        header = self.request.headers.get("Authorization")
        if header:
            # Checked now (async) but reported only if the endpoint needs a caller: a stale token on
            # a public endpoint such as login must not block it.
            try:
                self._principal = await self.service.authenticate(parse_bearer(header))
            except AuthError as error:
                self._auth_error = error
        if self.request.method != "OPTIONS":
            try:
                if self._principal is not None:
                    self.service.check_device(self._principal)
                else:
                    self.service.check_client(self.request.remote_ip or "")
            except RateLimited as refused:
                self._refuse_after_body(refused)

    def _refuse_after_body(self, error: ImError) -> None:
        """Answer ``error`` once the request's body has been read (and dropped), not now: a reply sent
        before the body would make the server close the connection while the client is still writing
        it, so a client over its limit would see its connection dropped instead of a 429."""
        self._refused = True

        def refuse(*_args: Any) -> None:
            raise error

        setattr(self, (self.request.method or "get").lower(), refuse)

    def data_received(self, chunk: bytes) -> None:
        if self._body_too_large or self._refused:
            return
        self._body += chunk
        if len(self._body) > self.settings_.max_body_bytes:
            self._body_too_large = True
            self._body = bytearray()

    def options(self, *args: Any) -> None:
        """CORS preflight for the configured origins (long-poll from another origin's page)."""
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)

    # -- helpers for subclasses -----------------------------------------------------------------------

    @property
    def principal(self) -> Principal:
        """The authenticated caller; raises the 401 error on a missing, bad or revoked token."""
        if self._auth_error is not None:
            raise self._auth_error
        if self._principal is None:
            raise AuthError("missing token: send 'Authorization: Bearer <token>'", code="missing_token")
        return self._principal

    def json_body(self) -> dict[str, Any]:
        if self._body_too_large:
            limit = self.settings_.max_body_bytes
            raise TooLarge(f"request body is larger than {limit} bytes", code="body_too_large")
        return decode_json_body(bytes(self._body), max_bytes=self.settings_.max_body_bytes)

    def query(self) -> dict[str, str]:
        return {name: values[-1].decode("utf-8", "replace")
                for name, values in self.request.query_arguments.items() if values}

    def reply(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(payload, separators=(",", ":"), ensure_ascii=False))

    # -- errors ---------------------------------------------------------------------------------------

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ImError):
            status_code = http_status(error)
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ImError):
            body = error.to_dict()
            retry_after = getattr(error, "retry_after_secs", None)
            if retry_after is not None:
                self.set_header("Retry-After", str(max(1, round(retry_after))))
        elif isinstance(error, tornado.web.HTTPError) and error.log_message and status_code < 500:
            body = {"code": _HTTP_CODES.get(status_code, "error"), "message": error.log_message % error.args}
        else:
            body = {"code": _HTTP_CODES.get(status_code, "error"), "message": self._reason}
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": body}, separators=(",", ":")))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ImError):
            log.warning("%s %s -> %s: %s", self.request.method, self.request.path, value.code, value.message)
        else:
            super().log_exception(typ, value, tb)


class NotFoundHandler(ApiHandler):
    """JSON 404 for unknown API paths (and 405-free: any method)."""

    async def prepare(self) -> None:
        raise tornado.web.HTTPError(404, "no such endpoint: %s", self.request.path)
