"""Errors the SDK raises to its caller."""

from __future__ import annotations

__all__ = ["ApiError", "ClientClosed", "ConnectionFailed", "ImClientError", "SendFailed"]


class ImClientError(Exception):
    """Base of every error raised by :mod:`imclient`."""


class ApiError(ImClientError):
    """The server answered with an error body ``{"error": {code, message, field?}}``.

    ``retryable`` is true for answers that a later identical request may not get (503, 429): the SDK
    retries those itself before giving up.
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after_secs: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after_secs = retry_after_secs

    @property
    def retryable(self) -> bool:
        return self.status in (429, 502, 503, 504)


class ConnectionFailed(ImClientError):
    """No node answered (refused, reset, timed out); the SDK retries these itself."""


class SendFailed(ImClientError):
    """A send could not be confirmed before its deadline. It may still have been stored: sending again
    with the same ``client_msg_id`` is safe and returns the original receipt."""

    def __init__(self, message: str, client_msg_id: str) -> None:
        super().__init__(message)
        self.client_msg_id = client_msg_id


class ClientClosed(ImClientError):
    """The client was closed (or kicked by a newer session) while the call was waiting."""
