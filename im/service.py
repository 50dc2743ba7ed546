"""The use cases, shared by the WebSocket, long-poll and REST transports.

Transports parse a request, call one method here and encode what it returns; no delivery logic lives
in a handler. The order of a send is the product's promise: write to the store (group commit), then
publish the new inbox heads on the bus, then return the receipt.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from im.accounts.auth import (
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    Principal,
    TokenIssuer,
    hash_password,
    verify_password,
)
from im.cluster.bus import Bus
from im.cluster.presence import Connection, LocalPresence, OnlinePage, Presence, PresenceInfo
from im.conversations.receipts import (
    DELIVERED,
    READ,
    RECEIPT_KIND,
    Touched,
    parse_msg_id,
    receipt_drafts,
    wants_receipt,
)
from im.conversations.service import Conversations, Target
from im.delivery.batching import GroupCommitter
from im.delivery.hub import Hub
from im.delivery.inbox import InboxStore, TrimmedEntry
from im.errors import AuthError, ConflictError, InvalidInput, RateLimited
from im.limits import Limits
from im.models import AckResult, Draft, PullResult, Receipt
from im.ops.metrics import Metrics
from im.ops.webhooks import WebhookSender, message_event
from im.protocol import SendRequest
from im.storage.store import Store

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
# Why a connection was closed by the `single` login policy (the `reason` of the kicked frame).
KICK_REASON = "logged_in_elsewhere"
RemoteKickFn = Callable[[str, float], Awaitable[None]]


class _PollWaiter:
    """A long-poll waiting for its user's inbox to move.

    A bare future that the hub resolves with True (inbox moved, kicked, shutdown) and a timer with
    False (timeout). It used to be an ``asyncio.Event`` awaited through ``asyncio.wait_for``, which on
    3.11 costs a Task, its coroutine, the Event and its waiter deque for every parked poll (with the
    handler's own task, also gone, ~4 KB of server RSS per waiting client: ``scripts/conn_memory.py``).
    """

    __slots__ = ("kicked", "woken")

    def __init__(self) -> None:
        self.woken: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.kicked = ""

    def _wake(self, woken: bool) -> None:
        if not self.woken.done():  # done: woken already, timed out, or the poll was cancelled
            self.woken.set_result(woken)

    def inbox_changed(self, seq: int) -> None:
        self._wake(True)

    def kick(self, reason: str) -> None:
        self.kicked = reason
        self._wake(True)

    def going_away(self) -> None:
        self._wake(True)  # answer now (with whatever is new); the client polls again elsewhere

    async def wait(self, timeout_secs: float) -> bool:
        """True once woken (also if that happened before this call), False after ``timeout_secs``."""
        if self.woken.done() or timeout_secs <= 0:
            return self.woken.done()
        timer = self.woken.get_loop().call_later(timeout_secs, self._wake, False)
        try:
            return await self.woken
        finally:
            timer.cancel()


class MessagingService:
    def __init__(
        self, *, store: Store, inbox: InboxStore, tokens: TokenIssuer, hub: Hub, bus: Bus,
        commit_max_batch: int = 256, commit_max_in_flight: int = 1, limits: Limits | None = None,
        presence: Presence | None = None, login_policy: str = "multi",
        metrics: Metrics | None = None, webhooks: WebhookSender | None = None,
        conversations: Conversations | None = None,
    ) -> None:
        self.store = store
        self.inbox = inbox
        # Friends, groups, files, history, send rules; delivered receipts are written when acks trim.
        self.conversations = conversations or Conversations(store)
        inbox.on_trim = self._delivered
        self.tokens = tokens
        self.hub = hub
        self.bus = bus
        self.committer = GroupCommitter(self._write_and_notify, max_batch=commit_max_batch,
                                        max_in_flight=commit_max_in_flight)
        self.limits = limits or Limits()
        self._acked: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._token_versions: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._dummy_hash: str | None = None
        self.presence: Presence = presence or LocalPresence()
        self.login_policy = login_policy
        # Set by the runtime in cluster mode: asks the other nodes to kick a user's older connections.
        self.remote_kick: RemoteKickFn | None = None
        self.metrics = metrics or Metrics()
        self.webhooks = webhooks
        self._poll_waiters = 0
        self.metrics.gauge("im_connections", "Open client connections on this node by transport",
                           self._connections_by_transport, label="transport")
        self.metrics.gauge("im_long_poll_waiters", "Long-polls waiting on this node",
                           lambda: {"": float(self._poll_waiters)})
        self.metrics.gauge("im_write_queue", "Sends and acknowledgements queued for the store on this node",
                           self._write_queue, label="kind")

    def _write_queue(self) -> dict[str, float]:
        return {"send": float(self.committer.queued), "ack": float(self.inbox.acks_queued)}

    def _connections_by_transport(self) -> dict[str, float]:
        waiters = self._poll_waiters
        return {"ws": float(max(0, self.hub.listener_count() - waiters)), "longpoll": float(waiters)}

    async def start(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.start()
        await self.store.ensure_indexes()
        await self.inbox.start()
        await self.conversations.start()
        await self.presence.start()
        await self.bus.start(self.hub.deliver)
        self._dummy_hash = await hash_password(_DUMMY_HASH_PASSWORD)

    async def quiesce(self, grace_secs: float) -> None:
        """Shutdown, step one: end every wait on this node and give in-flight work ``grace_secs`` to
        answer (long-polls reply, sockets close with 1001, queued sends are written) before the
        transport cuts the remaining connections."""
        self.hub.going_away()
        deadline = time.monotonic() + grace_secs
        # Two unrelated counters drain at shutdown; polling them is simpler than wiring events for it.
        while (self._poll_waiters or self.committer.queued) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # let the answers be written out

    async def close(self) -> None:
        # Acknowledgements first (long-polls' included): their delivered receipts go through the committer.
        await self.inbox.close()
        await self.committer.drain()
        await self.inbox.save_heads(stopping=True)  # after the last batch: the counters are the heads
        await self.bus.close()
        await self.presence.close()
        if self.webhooks is not None:
            await self.webhooks.close()

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
        """Store a one-to-one or group message durably, notify, and return its receipt.

        A group message is archived once and gets one entry (with that member's own seq) in every
        member's inbox, the sender's included, in the same batched write as any other message.
        """
        return await (await self.queue_send(principal, request))

    async def queue_send(self, principal: Principal, request: SendRequest, *,
                         before_notify: Callable[[Receipt], None] | None = None) -> asyncio.Future[Receipt]:
        """Check a send and queue it for the next group commit; the future gets the receipt.

        Sends are written in the order they were queued, so a transport that queues one client's
        frames in order (and awaits receipts concurrently) keeps that client's messages in order.
        ``before_notify`` is called with the receipt once it is durable, before anyone is notified.
        """
        sender = principal.user
        self._check_send_rate(sender)
        conversations = self.conversations
        if request.group:
            target = await conversations.group_target(sender, request.group)
        else:
            target = await conversations.direct_target(sender, request.to)
        body: Any = request.body
        if request.kind == "file":
            body = await conversations.attachment(sender, target.conv, request.body)
        return self._enqueue(sender, request, target, body, before_notify)

    def queue_send_nowait(
        self, principal: Principal, request: SendRequest, *,
        before_notify: Callable[[Receipt], None] | None = None,
    ) -> asyncio.Future[Receipt] | None:
        """:meth:`queue_send` without a wait, when its checks need nothing from the store (a text
        message to a user this node has seen); None means "await :meth:`queue_send`" (nothing was
        checked or counted yet). Why: a transport can then queue the common send in the same event-loop
        turn that read it, with no task of its own (see ``handlers/ws.py``)."""
        if request.group or request.kind == "file":
            return None
        target = self.conversations.direct_target_known(principal.user, request.to)
        if target is None:
            return None
        self._check_send_rate(principal.user)
        return self._enqueue(principal.user, request, target, request.body, before_notify)

    def _check_send_rate(self, sender: str) -> None:
        if self.limits.sends_per_user is not None:
            self.limits.sends_per_user.check(sender)

    def _enqueue(self, sender: str, request: SendRequest, target: Target, body: Any,
                 before_notify: Callable[[Receipt], None] | None) -> asyncio.Future[Receipt]:
        draft = Draft(
            sender=sender, to=target.to, conv=target.conv, kind=request.kind,
            body=body, client_msg_id=request.client_msg_id, recipients=target.recipients,
            before_notify=before_notify,
        )
        return self.committer.enqueue(draft)

    # -- receipts -------------------------------------------------------------------------------------

    async def _delivered(self, trimmed: dict[str, list[TrimmedEntry]]) -> None:
        """Inbox hook, before a batch of acknowledged entries is trimmed: delivered receipts to senders."""
        by_reader = {
            reader: [Touched(e.msg_id, e.conv, e.sender) for e in entries
                     if wants_receipt(reader, sender=e.sender, kind=e.kind)]
            for reader, entries in trimmed.items()
        }
        await self._write_receipts(DELIVERED, {r: t for r, t in by_reader.items() if t})

    async def read(self, principal: Principal, msg_ids: Sequence[str]) -> list[str]:
        """``principal`` has read ``msg_ids``: read receipts to their senders. Returns the ids taken
        (messages not received, one's own, and group messages already read are skipped; repeating a
        read of the same ids stores nothing new)."""
        ids = [parse_msg_id(m, "msg_ids") for m in msg_ids]
        # Read implies delivered: acknowledgements still lingering go first, so a sender never sees a
        # message read before it is delivered.
        await self.inbox.settle(principal.user)
        touched = await self.conversations.receipts.readable(principal.user, ids)
        if touched:
            await self._write_receipts(READ, {principal.user: touched})
        return [t.msg_id for t in touched]

    async def _write_receipts(self, status: str, by_reader: dict[str, list[Touched]]) -> None:
        if not by_reader:
            return
        # Through the committer like any message: durable, ordered in the sender's inbox, notified.
        drafts = [d for reader, touched in by_reader.items() for d in receipt_drafts(reader, status, touched)]
        # Futures, not coroutines: gather would wrap each coroutine in a task of its own.
        await asyncio.gather(*(self.committer.enqueue(d) for d in drafts))
        await self.conversations.receipts.record(status, by_reader)

    async def _write_and_notify(self, drafts: Sequence[Draft]) -> list[Receipt]:
        self.metrics.commit_batch_messages.observe(len(drafts))
        with self.metrics.commit_seconds.time():
            receipts = await self.inbox.append(drafts)
        self._after_write(drafts, receipts)
        _tell_senders(drafts, receipts)
        heads: dict[str, int] = {}
        for receipt in receipts:
            if receipt.duplicate:
                continue
            for user, seq in receipt.seqs.items():
                heads[user] = max(heads.get(user, 0), seq)
        if heads:
            await self.bus.publish(heads)
        return receipts

    def _after_write(self, drafts: Sequence[Draft], receipts: Sequence[Receipt]) -> None:
        """Count the batch and queue its webhooks; synchronous, so it never delays the receipts."""
        metrics, webhooks = self.metrics, self.webhooks
        for draft, receipt in zip(drafts, receipts, strict=False):
            if receipt.duplicate:
                metrics.duplicate_sends.inc()
                continue
            metrics.messages_stored.inc()
            metrics.inbox_entries_written.inc(len(receipt.seqs))
            # Webhooks are CIM's message callback: user messages, not the server's own receipt entries.
            if webhooks is not None and draft.kind != RECEIPT_KIND:
                webhooks.enqueue(message_event(
                    msg_id=receipt.msg_id, sender=draft.sender, to=draft.to, conv=receipt.conv,
                    kind=draft.kind, body=draft.body, client_msg_id=receipt.client_msg_id, ts=receipt.ts,
                    seqs=receipt.seqs,
                ))

    # -- receiving ------------------------------------------------------------------------------------

    async def pull(self, principal: Principal, *, after: int, limit: int) -> PullResult:
        with self.metrics.pull_seconds.time():
            result = await self.inbox.pull(principal.user, after=after, limit=limit)
        self.metrics.messages_delivered.inc(len(result.messages))
        return result

    async def inbox_head(self, principal: Principal) -> int:
        """The highest seq of the user's inbox (what a re-check notifies)."""
        return await self.inbox.head(principal.user)

    def pull_cached(self, principal: Principal, *, after: int, limit: int) -> PullResult | None:
        """:meth:`pull` answered at once from this node's memory, or None when that needs the store.

        Why a synchronous twin: a pull right after a notify is nearly always served from memory, and a
        transport that answers it in the same event-loop turn as the request spares it a task and a
        turn of waiting behind everything else the loop has queued (the bulk of notify-to-receive time
        under load).
        """
        started = time.perf_counter()
        result = self.inbox.pull_cached(principal.user, after=after, limit=limit)
        if result is not None:
            self.metrics.pull_seconds.observe(time.perf_counter() - started)
            self.metrics.messages_delivered.inc(len(result.messages))
        return result

    async def ack(self, principal: Principal, *, upto: int) -> AckResult:
        with self.metrics.ack_seconds.time():
            result = await self.inbox.ack(principal.user, principal.device, upto=upto)
        self._remember_ack(principal, result.cursor)
        return result

    async def poll(self, principal: Principal, *, after: int, limit: int, timeout_secs: float) -> PullResult:
        """Long-poll: acknowledge ``after``, then return what is newer, waiting up to ``timeout_secs``.

        The waiter is registered before the first pull, so a message stored between the pull and the
        wait still wakes it. Cancelling the call (client went away) unregisters the waiter.
        """
        self._check_connection_cap(principal)
        self._ack_for_poll(principal, after)
        waiter = _PollWaiter()
        self._poll_waiters += 1
        try:
            await self._attach(principal, waiter)  # a waiting long-poll counts as a connection
            result = await self.pull(principal, after=after, limit=limit)
            if result.messages or result.gap:
                return result
            if _cancel_swallowed():
                raise asyncio.CancelledError  # the client is gone: do not hold a waiter for the timeout
            if not await waiter.wait(timeout_secs):
                return result
            if waiter.kicked:
                raise ConflictError("a newer session of this user connected", code="kicked")
            return await self.pull(principal, after=after, limit=limit)
        finally:
            self._poll_waiters -= 1
            self.disconnect(principal, waiter)

    def _ack_for_poll(self, principal: Principal, after: int) -> None:
        """A poll's ``after`` acknowledges what the client holds. Written in the background: nothing in
        the poll's answer depends on it, and acknowledgements are batched (``IM_ACK_LINGER_SECS``)."""
        if after <= 0:
            return
        cached = self._acked.get((principal.user, principal.device))
        if cached is not None and after <= cached[0] and time.monotonic() - cached[1] < ACK_REFRESH_SECS:
            return
        self._remember_ack(principal, after)  # a poll repeated before the write lands does not ack again
        # Queued with a callback, not a task: one task per answered poll was ~3% of the server's CPU.
        outcome = self.inbox.ack_nowait(principal.user, principal.device, upto=after)
        outcome.add_done_callback(functools.partial(self._poll_acked, principal, time.perf_counter()))

    def _poll_acked(self, principal: Principal, queued_at: float, outcome: asyncio.Future[AckResult]) -> None:
        if outcome.cancelled():
            return
        self.metrics.ack_seconds.observe(time.perf_counter() - queued_at)  # as `ack` times its own
        exc = outcome.exception()
        if exc is None:
            self._remember_ack(principal, outcome.result().cursor)
        elif not isinstance(exc, InvalidInput):  # InvalidInput: `after` beyond the head (another epoch)
            # Not lost: the next poll acknowledges again (the cursor only ever moves forward).
            self._acked.pop((principal.user, principal.device), None)
            log.warning("acknowledging for a long-poll of %s failed: %s", principal.user, exc)

    def _remember_ack(self, principal: Principal, cursor: int) -> None:
        key = (principal.user, principal.device)
        self._acked[key] = (cursor, time.monotonic())
        self._acked.move_to_end(key)
        if len(self._acked) > ACK_CACHE_SIZE:
            self._acked.popitem(last=False)

    # -- connections ----------------------------------------------------------------------------------

    async def connect(self, principal: Principal, listener: Connection) -> None:
        """A socket of ``principal`` is open on this node and wants notifies."""
        self._check_connection_cap(principal)
        await self._attach(principal, listener)

    async def _attach(self, principal: Principal, listener: Connection) -> None:
        """Register for notifies and presence; under the `single` policy, kick older connections."""
        self.hub.add(principal.user, listener)
        connected_at = await self.presence.connected(principal.user, listener)
        if self.login_policy == "single":
            self.kick_local(principal.user, connected_at, keep=listener)
            if self.remote_kick is not None:
                await self.remote_kick(principal.user, connected_at)

    def kick_local(self, user: str, before: float, *, keep: Connection | None = None) -> None:
        """Kick ``user``'s connections on this node opened before ``before`` (wall-clock seconds)."""
        for conn in self.presence.table.older_than(user, before, keep=keep):
            log.info("kicking an older connection of %s (login policy single)", user)
            try:
                conn.kick(KICK_REASON)
            except Exception:
                log.exception("kicking a connection of %s failed", user)

    def _check_connection_cap(self, principal: Principal) -> None:
        cap = self.limits.max_connections_per_user
        if cap and self.hub.listener_count(principal.user) >= cap:
            raise RateLimited(f"user has {cap} connections open on this node already", retry_after_secs=5,
                              code="too_many_connections")

    def disconnect(self, principal: Principal, listener: Connection) -> None:
        """The socket closed; it is forgotten at once (called from synchronous close callbacks).

        Presence is updated by its own writer task (Redis in a cluster), never awaited here.
        """
        self.hub.remove(principal.user, listener)
        self.presence.disconnected(principal.user, listener)

    # -- presence -------------------------------------------------------------------------------------

    async def presence_of(self, user: str) -> PresenceInfo:
        return await self.presence.lookup(user)

    async def online_users(self, *, after: str, limit: int) -> OnlinePage:
        return await self.presence.online(after=after, limit=limit)

    # -- operations -----------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            await self.store.ping()
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"unavailable: {exc}"
        # A bus with an external broker (Redis) reports its reachability as "ok" or "unavailable: ...".
        bus_health = getattr(self.bus, "health", None)
        if bus_health is not None:
            try:
                checks["bus"] = await bus_health()
            except Exception as exc:
                checks["bus"] = f"unavailable: {exc}"
        return checks


def _tell_senders(drafts: Sequence[Draft], receipts: Sequence[Receipt]) -> None:
    """Run the drafts' ``before_notify`` hooks (new messages only: a duplicate was notified when it
    was first stored). A failing hook costs its sender a notify it would have skipped, nothing more."""
    for draft, receipt in zip(drafts, receipts, strict=True):
        if draft.before_notify is not None and not receipt.duplicate:
            try:
                draft.before_notify(receipt)
            except Exception:
                log.exception("a before_notify hook failed")


def _cancel_swallowed() -> bool:
    """True when the running task was asked to stop but an await swallowed the ``CancelledError``.

    On Python 3.11 ``asyncio.wait_for`` returns the inner result when that finished just as the cancel
    arrived (CPython gh-86296, fixed in 3.12), and the MongoDB driver writes to its sockets through
    it: a long-poll cancelled by a dropped connection during its pull then went on to wait its whole
    timeout. ``Task.cancelling()`` still counts the request, so the caller can honour it.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_CHARS} characters", field="password")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidInput(f"password must have at most {MAX_PASSWORD_CHARS} characters", field="password")
