"""The one exception hierarchy of the domain.

Each subclass carries a stable machine-readable ``code`` (clients switch on it) and a human message.
Transports map the class to an HTTP status or an error frame in exactly one place
(``handlers/errors.py``); the domain never knows about HTTP.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConflictError",
    "ForbiddenError",
    "ImError",
    "InvalidInput",
    "NotFoundError",
    "RateLimited",
    "StoreUnavailable",
    "TooLarge",
]


class ImError(Exception):
    """Base of every error a client may see. ``field`` names the offending input when there is one."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def to_dict(self) -> dict[str, str]:
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidInput(ImError):
    """The request or frame is malformed: wrong type, missing field, out of range."""

    code = "invalid"


class TooLarge(InvalidInput):
    """A body, frame or field is over its configured limit (invalid input with its own status, 413)."""

    code = "too_large"


class AuthError(ImError):
    """Missing, expired, forged or otherwise unacceptable credentials."""

    code = "unauthorized"


class ForbiddenError(ImError):
    """Authenticated, but not allowed to do this."""

    code = "forbidden"


class NotFoundError(ImError):
    """The named object does not exist, or the caller may not know that it does."""

    code = "not_found"


class ConflictError(ImError):
    """The request clashes with stored state (a user id already taken, ...)."""

    code = "conflict"


class RateLimited(ImError):
    """Too many requests; ``retry_after_secs`` says when to come back."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_secs: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_secs = retry_after_secs


class Overloaded(ImError):
    """The node has more work queued than it can do soon; nothing was accepted, retry after
    ``retry_after_secs`` (a refusal that costs the node little, instead of a send that times out)."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after_secs: float) -> None:
        super().__init__(message)
        self.retry_after_secs = retry_after_secs


class StoreUnavailable(ImError):
    """The database cannot be reached or refused the write; nothing was acknowledged, retry later."""

    code = "store_unavailable"
