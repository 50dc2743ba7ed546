"""Access tokens: HS256 JWTs naming the user, the device and the user's token version.

Security notes:
- Tokens are verified with an explicit algorithm list, so ``alg: none`` and algorithm-confusion tokens
  are refused; ``exp``, ``iat``, ``nbf``, ``iss``, ``sub``, ``dev`` and ``ver`` are required.
- Key rotation: every token names its key in the ``kid`` header (a hash prefix of the secret, never the
  secret). Old secrets stay accepted for verification until the tokens they signed expire.
- Revocation: ``ver`` is the user's token version at login and ``dver`` the device's; signing out
  everywhere bumps the first, signing out one device the second, which refuses every token issued
  before to them (checked per request by ``im/accounts/accounts.py``, not here).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import jwt

from im.errors import AuthError
from im.lru import LruDict

__all__ = ["Principal", "TokenIssuer", "key_id", "parse_bearer"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user, the device the token was issued for, and the token versions (the
    user's and the device's) it was issued under."""

    user: str
    device: str
    version: int = 0
    device_version: int = 0


def key_id(secret: str) -> str:
    """A public name for a secret: a short hash prefix, so the header never reveals the key."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


class TokenIssuer:
    """Issues and verifies HS256 JWTs carrying the user (``sub``) and device (``dev``)."""

    ALGORITHM = "HS256"
    # Tolerated clock difference between nodes when checking exp/iat/nbf.
    CLOCK_SKEW_SECS = 30
    # Tokens whose signature and claims were checked, remembered until they expire: a long-poll
    # client presents the same token on every poll, and decoding is costly. Revocation is checked
    # per request elsewhere, so it is not affected.
    VERIFIED_CACHE_SIZE = 4096

    def __init__(self, secret: str, *, ttl_secs: int, issuer: str, old_secrets: Sequence[str] = ()) -> None:
        for candidate in (secret, *old_secrets):
            if len(candidate) < 32:
                raise ValueError("JWT secret must be at least 32 characters")
        self._current_kid = key_id(secret)
        self._keys = {key_id(s): s for s in (*old_secrets, secret)}
        self._ttl_secs = ttl_secs
        self._issuer = issuer
        self._verified: LruDict[str, tuple[Principal, float]] = LruDict(self.VERIFIED_CACHE_SIZE)

    def issue(self, principal: Principal, *, now: float | None = None) -> tuple[str, int]:
        """Return ``(token, expires_at)`` with ``expires_at`` in Unix seconds."""
        issued_at = int(time.time() if now is None else now)
        expires_at = issued_at + self._ttl_secs
        claims = {
            "sub": principal.user,
            "dev": principal.device,
            "ver": principal.version,
            "dver": principal.device_version,
            "iss": self._issuer,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires_at,
            "jti": secrets.token_hex(8),
        }
        token = jwt.encode(claims, self._keys[self._current_kid], algorithm=self.ALGORITHM,
                           headers={"kid": self._current_kid})
        return token, expires_at

    def verify(self, token: str) -> Principal:
        """Return the token's principal, or raise :class:`AuthError` saying why it is refused."""
        if not token:
            raise AuthError("missing token", code="missing_token")
        known = self._verified.touch(token)
        if known is not None:
            principal, valid_until = known
            if time.time() <= valid_until:
                return principal
            del self._verified[token]  # expired: the full check below says so
        principal, expires_at = self._decode(token)
        self._verified.put(token, (principal, expires_at + self.CLOCK_SKEW_SECS))
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            secret = self._keys.get(kid) if isinstance(kid, str) else None
            if secret is None:
                raise AuthError("token was signed with an unknown key", code="invalid_token")
            claims = jwt.decode(
                token,
                secret,
                algorithms=[self.ALGORITHM],
                issuer=self._issuer,
                leeway=self.CLOCK_SKEW_SECS,
                options={"require": ["exp", "iat", "nbf", "iss", "sub", "dev", "ver"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token has expired", code="token_expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token is not valid yet", code="invalid_token") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim!r} claim", code="invalid_token") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("token algorithm is not accepted", code="invalid_token") from None
        except jwt.InvalidTokenError:
            raise AuthError("token is invalid", code="invalid_token") from None
        user, device, version = claims.get("sub"), claims.get("dev"), claims.get("ver")
        device_version = claims.get("dver", 0)  # absent from tokens issued before devices could sign out
        if (not isinstance(user, str) or not isinstance(device, str) or type(version) is not int
                or type(device_version) is not int):
            raise AuthError("token claims are malformed", code="invalid_token")
        principal = Principal(user=user, device=device, version=version, device_version=device_version)
        return principal, float(claims["exp"])


def parse_bearer(header: str | None) -> str:
    """Extract the token of an ``Authorization: Bearer <token>`` header ('' when absent)."""
    if not header:
        return ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'", code="invalid_token")
    return token.strip()
