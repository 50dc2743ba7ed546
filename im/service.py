"""The use cases, shared by the WebSocket, long-poll and REST transports.

Transports parse a request, call one method here and encode what it returns; no delivery logic lives
in a handler. The order of a send is the product's promise: write to the store (group commit), then
publish the new inbox heads on the bus, then return the receipt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from im.auth import (
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    Principal,
    TokenIssuer,
    hash_password,
    verify_password,
)
from im.bus import Bus
from im.committer import GroupCommitter
from im.errors import AuthError, InvalidInput, NotFoundError, RateLimited
from im.hub import Hub, InboxListener
from im.inbox import InboxStore
from im.models import AckResult, Draft, PullResult, Receipt, direct_conversation_id
from im.protocol import SendRequest
from im.ratelimit import Limits
from im.store import Store

__all__ = ["MessagingService"]

log = logging.getLogger(__name__)

# A long-poll that names an already-acknowledged `after` skips the ack write; the cursor's seen_at is
# still refreshed this often so an actively polling device never counts as idle.
ACK_REFRESH_SECS = 3600.0
ACK_CACHE_SIZE = 100_000
# A logout on one node is seen by the others within this time (they cache token versions).
TOKEN_VERSION_CACHE_SECS = 5.0
# Verifying against this hash when the user does not exist keeps login timing from revealing accounts.
_DUMMY_HASH_PASSWORD = "not-a-real-password"


class _PollWaiter:
    """A long-poll waiting for its user's inbox to move."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def inbox_changed(self, seq: int) -> None:
        self.event.set()


class MessagingService:
    def __init__(
        self, *, store: Store, inbox: InboxStore, tokens: TokenIssuer, hub: Hub, bus: Bus,
        commit_max_batch: int = 256, limits: Limits | None = None,
    ) -> None:
        self.store = store
        self.inbox = inbox
        self.tokens = tokens
        self.hub = hub
        self.bus = bus
        self.committer = GroupCommitter(self._write_and_notify, max_batch=commit_max_batch)
        self.limits = limits or Limits()
        self._acked: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._token_versions: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._dummy_hash: str | None = None

    async def start(self) -> None:
        await self.store.ensure_indexes()
        await self.bus.start(self.hub.deliver)
        self._dummy_hash = await hash_password(_DUMMY_HASH_PASSWORD)

    async def close(self) -> None:
        await self.committer.drain()
        await self.bus.close()

    # -- accounts -------------------------------------------------------------------------------------

    async def register(self, user: str, password: str) -> None:
        _check_password(password)
        await self.store.create_user(user, await hash_password(password))
        log.info("registered user %s", user)

    async def login(self, user: str, password: str, device: str, *, client_ip: str = "") -> tuple[str, int]:
        """Return ``(token, expires_at)``; the same error for an unknown user as for a wrong password.

        Failed attempts are throttled per user id and per client address (brute-force protection);
        while throttled even the right password is refused, so guessing cannot go on.
        """
        limits = self.limits
        throttles = ((limits.login_failures_per_user, user), (limits.login_failures_per_ip, client_ip))
        for limiter, key in throttles:
            if limiter is not None and (wait := limiter.blocked_for(key)) > 0:
                raise RateLimited(f"too many failed logins; retry in {wait:.0f} s", retry_after_secs=wait,
                                  code="login_throttled")
        stored = await self.store.credentials(user)
        if stored is None:
            await verify_password(password, self._dummy_hash or "")
            ok, version = False, 0
        else:
            ok, version = await verify_password(password, stored[0]), stored[1]
        if not ok:
            for limiter, key in throttles:
                if limiter is not None:
                    limiter.peek_take(key)
            log.warning("failed login for %s from %s", user, client_ip or "?")
            raise AuthError("wrong user id or password", code="bad_credentials")
        return self.tokens.issue(Principal(user=user, device=device, version=version))

    async def logout(self, principal: Principal) -> None:
        """Revoke every token of ``principal.user`` (all devices): they are refused from now on."""
        version = await self.store.bump_token_version(principal.user)
        self._token_versions[principal.user] = (version, time.monotonic())
        log.info("user %s logged out: tokens before version %d revoked", principal.user, version)

    async def authenticate(self, token: str) -> Principal:
        """Verify the token and that it was not revoked (checked against a cache of a few seconds)."""
        principal = self.tokens.verify(token)
        cached = self._token_versions.get(principal.user)
        if cached is not None and time.monotonic() - cached[1] < TOKEN_VERSION_CACHE_SECS:
            current = cached[0]
        else:
            version = await self.store.token_version(principal.user)
            if version is None:
                raise AuthError("token names an unknown user", code="invalid_token")
            current = version
            self._token_versions[principal.user] = (current, time.monotonic())
            if len(self._token_versions) > ACK_CACHE_SIZE:
                self._token_versions.popitem(last=False)
        if principal.version != current:
            raise AuthError("token has been revoked (logged out)", code="token_revoked")
        return principal

    def check_client(self, client_ip: str) -> None:
        """Per-address request limit, applied by every transport before any work."""
        if self.limits.per_ip is not None:
            self.limits.per_ip.check(client_ip)

    # -- sending --------------------------------------------------------------------------------------

    async def send(self, principal: Principal, request: SendRequest) -> Receipt:
        """Store a one-to-one message durably, notify, and return its receipt."""
        sender, to = principal.user, request.to
        if self.limits.sends_per_user is not None:
            self.limits.sends_per_user.check(sender)
        if to != sender and not await self.store.user_exists(to):
            raise NotFoundError(f"recipient {to!r} does not exist", code="unknown_recipient", field="to")
        recipients = (sender,) if to == sender else (to, sender)
        draft = Draft(
            sender=sender, to=to, conv=direct_conversation_id(sender, to), kind=request.kind,
            body=request.body, client_msg_id=request.client_msg_id, recipients=recipients,
        )
        return await self.committer.submit(draft)

    async def _write_and_notify(self, drafts: Sequence[Draft]) -> list[Receipt]:
        receipts = await self.inbox.append(drafts)
        heads: dict[str, int] = {}
        for receipt in receipts:
            if receipt.duplicate:
                continue
            for user, seq in receipt.seqs.items():
                heads[user] = max(heads.get(user, 0), seq)
        if heads:
            await self.bus.publish(heads)
        return receipts

    # -- receiving ------------------------------------------------------------------------------------

    async def pull(self, principal: Principal, *, after: int, limit: int) -> PullResult:
        return await self.inbox.pull(principal.user, after=after, limit=limit)

    async def ack(self, principal: Principal, *, upto: int) -> AckResult:
        result = await self.inbox.ack(principal.user, principal.device, upto=upto)
        self._remember_ack(principal, result.cursor)
        return result

    async def poll(self, principal: Principal, *, after: int, limit: int, timeout_secs: float) -> PullResult:
        """Long-poll: acknowledge ``after``, then return what is newer, waiting up to ``timeout_secs``.

        The waiter is registered before the first pull, so a message stored between the pull and the
        wait still wakes it. Cancelling the call (client went away) unregisters the waiter.
        """
        self._check_connection_cap(principal)
        await self._ack_for_poll(principal, after)
        waiter = _PollWaiter()
        self.hub.add(principal.user, waiter)
        try:
            result = await self.pull(principal, after=after, limit=limit)
            if result.messages or result.gap:
                return result
            try:
                await asyncio.wait_for(waiter.event.wait(), timeout_secs)
            except TimeoutError:
                return result
            return await self.pull(principal, after=after, limit=limit)
        finally:
            self.hub.remove(principal.user, waiter)

    async def _ack_for_poll(self, principal: Principal, after: int) -> None:
        if after <= 0:
            return
        cached = self._acked.get((principal.user, principal.device))
        if cached is not None and after <= cached[0] and time.monotonic() - cached[1] < ACK_REFRESH_SECS:
            return
        # `after` beyond the head is a client from another epoch: nothing to ack, its pull reports the gap.
        with contextlib.suppress(InvalidInput):
            await self.ack(principal, upto=after)

    def _remember_ack(self, principal: Principal, cursor: int) -> None:
        key = (principal.user, principal.device)
        self._acked[key] = (cursor, time.monotonic())
        self._acked.move_to_end(key)
        if len(self._acked) > ACK_CACHE_SIZE:
            self._acked.popitem(last=False)

    # -- connections ----------------------------------------------------------------------------------

    async def connect(self, principal: Principal, listener: InboxListener) -> None:
        """A socket of ``principal`` is open on this node and wants notifies."""
        self._check_connection_cap(principal)
        self.hub.add(principal.user, listener)

    def _check_connection_cap(self, principal: Principal) -> None:
        cap = self.limits.max_connections_per_user
        if cap and self.hub.listener_count(principal.user) >= cap:
            raise RateLimited(f"user has {cap} connections open on this node already", retry_after_secs=5,
                              code="too_many_connections")

    def disconnect(self, principal: Principal, listener: InboxListener) -> None:
        """The socket closed; it is forgotten at once (called from synchronous close callbacks)."""
        self.hub.remove(principal.user, listener)

    # -- operations -----------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            await self.store.ping()
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"unavailable: {exc}"
        return checks


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_CHARS} characters", field="password")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidInput(f"password must have at most {MAX_PASSWORD_CHARS} characters", field="password")
