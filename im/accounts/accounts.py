"""Account use cases: register, log in, log out, and authenticate a request's token."""

from __future__ import annotations

import logging
import time

from im.accounts.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, PasswordHasher, hash_password
from im.accounts.tokens import Principal, TokenIssuer
from im.accounts.users import TokenVersions, UserStore
from im.errors import AuthError, InvalidInput, RateLimited
from im.limits import Limits
from im.lru import LruDict

__all__ = ["Accounts"]

log = logging.getLogger(__name__)

# A sign-out on one node is seen by the others within this time (they cache token versions).
TOKEN_VERSION_CACHE_SECS = 5.0
# Users whose token version is cached on this node.
TOKEN_VERSION_CACHE_SIZE = 100_000
# Verifying against this hash when the user does not exist keeps login timing from revealing accounts.
_DUMMY_HASH_PASSWORD = "not-a-real-password"


class Accounts:
    def __init__(self, users: UserStore, tokens: TokenIssuer, limits: Limits, hasher: PasswordHasher) -> None:
        self.users = users
        self._tokens = tokens
        self._limits = limits
        self._hasher = hasher
        self._token_versions: LruDict[str, tuple[TokenVersions, float]] = LruDict(TOKEN_VERSION_CACHE_SIZE)
        self._dummy_hash: str | None = None

    async def start(self) -> None:
        self._dummy_hash = await hash_password(_DUMMY_HASH_PASSWORD)

    async def register(self, user: str, password: str, *, client_ip: str = "") -> None:
        """Create ``user``; registrations per address are limited before the password is hashed, so
        a burst of them costs the node no hashing."""
        _check_password(password)
        if self._limits.registrations_per_ip is not None:
            self._limits.registrations_per_ip.check(client_ip)
        await self.users.create(user, await self._hasher.hash(password))
        log.info("registered user %s", user)

    async def login(self, user: str, password: str, device: str, *, client_ip: str = "") -> tuple[str, int]:
        """Return ``(token, expires_at)``; the same error for an unknown user as for a wrong password.

        Failed attempts are throttled per user id and per client address (brute-force protection);
        while throttled even the right password is refused, so guessing cannot go on. Attempts of any
        outcome are limited per address too, before the password is hashed.
        """
        limits = self._limits
        throttles = ((limits.login_failures_per_user, user), (limits.login_failures_per_ip, client_ip))
        for limiter, key in throttles:
            if limiter is not None and (wait := limiter.blocked_for(key)) > 0:
                raise RateLimited(f"too many failed logins; retry in {wait:.0f} s", retry_after_secs=wait,
                                  code="login_throttled")
        if limits.logins_per_ip is not None:
            limits.logins_per_ip.check(client_ip)
        self._hasher.refuse_if_full()  # before the store read: a login that cannot hash is not worth one
        stored = await self.users.credentials(user)
        if stored is None:
            await self._hasher.verify(password, self._dummy_hash or "")
            ok = False
        else:
            ok = await self._hasher.verify(password, stored.password_hash)
        if stored is None or not ok:
            for limiter, key in throttles:
                if limiter is not None:
                    limiter.peek_take(key)
            log.warning("failed login for %s from %s", user, client_ip or "?")
            raise AuthError("wrong user id or password", code="bad_credentials")
        versions = stored.versions
        return self._tokens.issue(Principal(user=user, device=device, version=versions.user,
                                            device_version=versions.of_device(device)))

    async def logout(self, principal: Principal, *, all_devices: bool = False) -> None:
        """Revoke the caller's device's tokens, or with ``all_devices`` every token of the user: they
        are refused from now on, and signing in again issues a valid one."""
        device = None if all_devices else principal.device
        versions = await self.users.revoke_tokens(principal.user, device)
        self._token_versions.put(principal.user, (versions, time.monotonic()))
        if all_devices:
            log.info("user %s signed out everywhere: every token issued before revoked", principal.user)
        else:
            log.info("user %s signed out device %r: its tokens issued before revoked", principal.user,
                     principal.device)

    async def authenticate(self, token: str) -> Principal:
        """Verify the token and that it was not revoked (checked against a cache of a few seconds)."""
        principal = self._tokens.verify(token)
        cached = self._token_versions.get(principal.user)
        if cached is not None and time.monotonic() - cached[1] < TOKEN_VERSION_CACHE_SECS:
            current = cached[0]
        else:
            versions = await self.users.token_versions(principal.user)
            if versions is None:
                raise AuthError("token names an unknown user", code="invalid_token")
            current = versions
            self._token_versions.put(principal.user, (current, time.monotonic()))
        device_version = current.of_device(principal.device)
        if principal.version != current.user or principal.device_version != device_version:
            raise AuthError("token has been revoked (signed out)", code="token_revoked")
        return principal

    def check_client(self, client_ip: str) -> None:
        """Per-address request limit: requests without a valid token, and WebSocket connects."""
        if self._limits.per_ip is not None:
            self._limits.per_ip.check(client_ip)

    def check_device(self, principal: Principal) -> None:
        """Per-device request limit: requests with a valid token, in place of the per-address one."""
        if self._limits.per_device is not None:
            self._limits.per_device.check(f"{principal.user}/{principal.device}")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_CHARS} characters", field="password")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidInput(f"password must have at most {MAX_PASSWORD_CHARS} characters", field="password")
