"""The one place where domain errors become HTTP statuses and WebSocket error frames."""

from __future__ import annotations

from typing import Any

from im.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    ImError,
    InvalidInput,
    NotFoundError,
    Overloaded,
    RateLimited,
    StoreUnavailable,
    TooLarge,
)

__all__ = ["error_frame", "http_status"]

_STATUS: tuple[tuple[type[ImError], int], ...] = (
    (TooLarge, 413),
    (InvalidInput, 400),
    (AuthError, 401),
    (ForbiddenError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (RateLimited, 429),
    (Overloaded, 503),
    (StoreUnavailable, 503),
)


def http_status(error: ImError) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 400


def error_frame(error: ImError, *, rid: Any = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"t": "error", **error.to_dict()}
    retry_after = getattr(error, "retry_after_secs", None)
    if retry_after is not None:  # what Retry-After says over HTTP
        frame["retry_after"] = max(1, round(retry_after))
    if rid is not None:
        frame["rid"] = rid
    return frame
