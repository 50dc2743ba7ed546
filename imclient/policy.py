"""What an error answer means to the client: log in again, stop reconnecting, retry, or give up.

The transport sessions turn answers into the two internal signals below; the connection loop, not the
session, decides what to do next, so every transport reacts to a refused token or a takeover the same way.
"""

from __future__ import annotations

from imclient.errors import ApiError, ImClientError

__all__ = ["CALL_TIMEOUT_SECS", "RELOGIN_CODES", "Kicked", "Relogin", "retryable"]

# One attempt of a send (or a pull frame) waits this long for its answer before retrying.
CALL_TIMEOUT_SECS = 10.0

# Error codes meaning "the token is no good any more": log in again and retry.
RELOGIN_CODES = frozenset({"missing_token", "invalid_token", "token_expired", "token_revoked",
                           "unauthenticated", "unauthorized"})
# Error frames over WebSocket carry no HTTP status; these codes are worth retrying.
_RETRYABLE_CODES = frozenset({"store_unavailable", "unavailable", "rate_limited", "too_many_connections"})


class Relogin(ImClientError):
    """The token was refused; get a new one and carry on."""


class Kicked(ImClientError):
    """A newer session of this user took over (login policy ``single``): do not reconnect."""


def retryable(error: ApiError) -> bool:
    """True if the same request may succeed later (an HTTP 429/5xx, or the equivalent frame code)."""
    return error.retryable or error.code in _RETRYABLE_CODES
