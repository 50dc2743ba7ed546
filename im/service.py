"""The one facade every transport calls: WebSocket, long-poll and REST alike.

A handler parses a request, calls one method here and encodes what it returns; no delivery logic lives
in a handler, and none here either: each method hands over to the part that owns the behaviour
(``im/accounts``, ``im/delivery``, ``im/conversations``, ``im/cluster``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from im.accounts.accounts import Accounts
from im.accounts.tokens import Principal
from im.cluster.connections import Connections
from im.cluster.presence import OnlinePage, PresenceInfo
from im.conversations.files import FileInfo, Upload
from im.conversations.friends import Relation
from im.conversations.groups import Group
from im.conversations.receipt_writer import ReceiptWriter
from im.conversations.service import Conversations
from im.delivery.admission import SendAdmission
from im.delivery.hub import Hub, InboxListener
from im.delivery.inboxes import Inboxes
from im.delivery.receiving import Receiver
from im.delivery.sending import BeforeNotifyFn, Sender
from im.errors import ImError
from im.limits import Limits
from im.models import AckResult, PullResult, Receipt
from im.ops.metrics import Metrics
from im.ops.webhooks import WebhookSender
from im.protocol import SendRequest
from im.storage.store import Store
from im.topology import Topology

__all__ = ["MessagingService"]

log = logging.getLogger(__name__)


class MessagingService:
    def __init__(
        self, *, store: Store, topology: Topology, hub: Hub, accounts: Accounts, inboxes: Inboxes,
        conversations: Conversations, limits: Limits, metrics: Metrics, webhooks: WebhookSender | None,
        login_policy: str, commit_max_batch: int, commit_max_in_flight: int,
        admission: SendAdmission | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.inboxes = inboxes
        self.metrics = metrics
        self.webhooks = webhooks
        self._topology = topology
        self._accounts = accounts
        self._conversations = conversations
        self._sender = Sender(inboxes, conversations, topology.bus, limits=limits, metrics=metrics,
                              webhooks=webhooks, commit_max_batch=commit_max_batch,
                              commit_max_in_flight=commit_max_in_flight, admission=admission)
        self._receipts = ReceiptWriter(self._sender.committer, inboxes, conversations.receipts,
                                       conversations.markers)
        self._connections = Connections(hub, topology.presence, route_kick=topology.route_kick,
                                        login_policy=login_policy,
                                        max_per_user=limits.max_connections_per_user)
        self._receiver = Receiver(inboxes, self._connections, metrics)
        metrics.gauge("im_connections", "Open client connections on this node by transport",
                      self._connections_by_transport, label="transport")
        metrics.gauge("im_long_poll_waiters", "Long-polls waiting on this node",
                      lambda: {"": float(self._receiver.poll_waiters)})
        metrics.gauge("im_write_queue", "Sends and acknowledgements queued for the store on this node",
                      self._write_queue, label="kind")

    def _write_queue(self) -> dict[str, float]:
        return {"send": float(self._sender.committer.queued), "ack": float(self.inboxes.acks_queued)}

    def _connections_by_transport(self) -> dict[str, float]:
        waiters = self._receiver.poll_waiters
        return {"ws": float(max(0, self.hub.listener_count() - waiters)), "longpoll": float(waiters)}

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.start()
        await self.store.ensure_indexes()
        await self._conversations.start()
        await self._topology.start(kick_local=self._connections.kick_local, learn=self.inboxes.learn)
        await self._accounts.start()

    async def quiesce(self, grace_secs: float) -> None:
        """Shutdown, step one: end every wait on this node and give in-flight work ``grace_secs`` to
        answer (long-polls reply, sockets close with 1001, queued sends are written) before the
        transport cuts the remaining connections."""
        self.hub.going_away()
        deadline = time.monotonic() + grace_secs
        # Two unrelated counters drain at shutdown; polling them is simpler than wiring events for it.
        while ((self._receiver.poll_waiters or self._sender.committer.queued)  # noqa: ASYNC110
               and time.monotonic() < deadline):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # let the answers be written out

    async def close(self) -> None:
        # Acknowledgements first (long-polls' included): their delivered receipts go through the committer.
        await self.inboxes.close_acks()
        await self._sender.committer.drain()
        await self.inboxes.stop()  # after the last batch: the counters are the heads
        await self._topology.close()
        if self.webhooks is not None:
            await self.webhooks.close()

    # -- accounts -------------------------------------------------------------------------------------

    async def register(self, user: str, password: str, *, client_ip: str = "") -> None:
        await self._accounts.register(user, password, client_ip=client_ip)

    async def login(self, user: str, password: str, device: str, *, client_ip: str = "") -> tuple[str, int]:
        return await self._accounts.login(user, password, device, client_ip=client_ip)

    async def logout(self, principal: Principal, *, all_devices: bool = False) -> None:
        await self._accounts.logout(principal, all_devices=all_devices)

    async def user_exists(self, user: str) -> bool:
        return await self._accounts.users.exists(user)

    async def authenticate(self, token: str) -> Principal:
        return await self._accounts.authenticate(token)

    def check_client(self, client_ip: str) -> None:
        self._accounts.check_client(client_ip)

    def check_device(self, principal: Principal) -> None:
        self._accounts.check_device(principal)

    # -- sending and receipts -------------------------------------------------------------------------

    async def send(self, principal: Principal, request: SendRequest) -> Receipt:
        """Store a one-to-one or group message durably, notify, and return its receipt."""
        return await (await self._sender.queue_send(principal, request))

    async def send_many(self, principal: Principal, requests: Sequence[SendRequest | ImError]
                        ) -> list[Receipt | ImError]:
        """A batch of sends: each one's receipt or error, in order (they share group commits)."""
        return await self._sender.send_many(principal, requests)

    async def queue_send(self, principal: Principal, request: SendRequest, *,
                         before_notify: BeforeNotifyFn | None = None) -> asyncio.Future[Receipt]:
        return await self._sender.queue_send(principal, request, before_notify=before_notify)

    def queue_send_nowait(self, principal: Principal, request: SendRequest, *,
                          before_notify: BeforeNotifyFn | None = None) -> asyncio.Future[Receipt] | None:
        return self._sender.queue_send_nowait(principal, request, before_notify=before_notify)

    async def read(self, principal: Principal, msg_ids: Sequence[str]) -> list[str]:
        return await self._receipts.read(principal, msg_ids)

    # -- receiving ------------------------------------------------------------------------------------

    async def pull(self, principal: Principal, *, after: int, limit: int) -> PullResult:
        return await self._receiver.pull(principal, after=after, limit=limit)

    def pull_cached(self, principal: Principal, *, after: int, limit: int) -> PullResult | None:
        return self._receiver.pull_cached(principal, after=after, limit=limit)

    async def inbox_head(self, principal: Principal) -> int:
        """The highest seq of the user's inbox (what a re-check notifies)."""
        return await self.inboxes.head(principal.user)

    async def ack(self, principal: Principal, *, upto: int) -> AckResult:
        return await self._receiver.ack(principal, upto=upto)

    async def poll(self, principal: Principal, *, after: int, limit: int, timeout_secs: float) -> PullResult:
        return await self._receiver.poll(principal, after=after, limit=limit, timeout_secs=timeout_secs)

    # -- connections and presence ---------------------------------------------------------------------

    async def connect(self, principal: Principal, listener: InboxListener) -> None:
        """A socket of ``principal`` is open on this node and wants notifies; from now on its device holds
        the entries it has not acknowledged (at its cursor, or from the start when it has none)."""
        await self.inboxes.joins.join(principal.user, principal.device, after=0)
        await self._connections.attach(principal.user, listener)

    def disconnect(self, principal: Principal, listener: InboxListener) -> None:
        self._connections.detach(principal.user, listener)

    async def presence_of(self, user: str) -> PresenceInfo:
        return await self._topology.presence.lookup(user)

    async def online_users(self, *, after: str, limit: int) -> OnlinePage:
        return await self._topology.presence.online(after=after, limit=limit)

    # -- friends, groups, history, files --------------------------------------------------------------

    async def friends(self, user: str) -> list[Relation]:
        return await self._conversations.friends.list(user)

    async def request_friend(self, user: str, other: str) -> Relation:
        return await self._conversations.request_friend(user, other)

    async def accept_friend(self, user: str, other: str) -> Relation:
        return await self._conversations.friends.accept(user, other)

    async def decline_friend(self, user: str, other: str) -> None:
        await self._conversations.friends.decline(user, other)

    async def remove_friend(self, user: str, other: str) -> None:
        await self._conversations.friends.remove(user, other)

    async def groups_of(self, user: str) -> list[Group]:
        return await self._conversations.groups.of_user(user)

    async def group(self, user: str, group_id: str) -> Group:
        """The group, for its members only."""
        return await self._conversations.groups.of_member(group_id, user)

    async def create_group(self, owner: str, name: str, members: Iterable[str]) -> Group:
        return await self._conversations.create_group(owner, name, members)

    async def rename_group(self, actor: str, group_id: str, name: str) -> Group:
        return await self._conversations.groups.rename(actor, group_id, name)

    async def add_members(self, actor: str, group_id: str, members: Iterable[str]) -> Group:
        return await self._conversations.add_members(actor, group_id, members)

    async def remove_member(self, actor: str, group_id: str, member: str) -> None:
        """Remove ``member`` (owner or admins); removing oneself is leaving."""
        groups = self._conversations.groups
        if member == actor:
            await groups.leave(actor, group_id)
        else:
            await groups.remove_members(actor, group_id, [member])

    async def set_admin(self, actor: str, group_id: str, user: str, *, admin: bool) -> Group:
        return await self._conversations.groups.set_admin(actor, group_id, user, admin=admin)

    async def history(self, user: str, conv: str, *, before: str | None, limit: int) -> dict[str, Any]:
        return await self._conversations.history(user, conv, before=before, limit=limit)

    async def conversations(self, user: str, *, before: str | None, limit: int) -> dict[str, Any]:
        """The user's conversations, newest activity first, with last message, unread and read marks."""
        return await self._conversations.conversations(user, before=before, limit=limit)

    async def receipt_summary(self, user: str, msg_id: str) -> dict[str, Any]:
        return await self._conversations.receipt_summary(user, msg_id, floor_of=self.inboxes.floor)

    async def start_upload(self, owner: str, *, to: str, group: str, name: str,
                           content_type: str | None) -> Upload:
        return await self._conversations.start_upload(owner, to=to, group=group, name=name,
                                                      content_type=content_type)

    async def download(self, user: str, file_id: str) -> tuple[FileInfo, AsyncIterator[bytes]]:
        return await self._conversations.download(user, file_id)

    # -- operations -----------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        try:
            await self.store.ping()
            return {"store": "ok"}
        except Exception as exc:
            return {"store": f"unavailable: {exc}"}
