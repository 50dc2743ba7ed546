"""Sending: check a send, queue it for the next group commit, and once it is durable notify.

The order is the product's promise: write to the store, then publish the new inbox heads on the bus,
then return the receipt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from im.accounts.tokens import Principal
from im.cluster.bus import Bus
from im.cluster.news import InboxNews
from im.conversations.receipts import RECEIPT_KIND
from im.conversations.service import Conversations, Target
from im.delivery.admission import SendAdmission
from im.delivery.batching import GroupCommitter
from im.delivery.inboxes import Inboxes
from im.errors import ImError
from im.limits import Limits
from im.models import Draft, Receipt
from im.ops.metrics import Metrics
from im.ops.webhooks import WebhookSender, message_event
from im.protocol import SendRequest

__all__ = ["BeforeNotifyFn", "Sender"]

log = logging.getLogger(__name__)

# Called with a send's receipt once it is durable, before anyone is notified.
BeforeNotifyFn = Callable[[Receipt], None]


class Sender:
    def __init__(self, inboxes: Inboxes, conversations: Conversations, bus: Bus, *, limits: Limits,
                 metrics: Metrics, webhooks: WebhookSender | None, commit_max_batch: int,
                 commit_max_in_flight: int, admission: SendAdmission | None = None) -> None:
        self._inboxes = inboxes
        self._conversations = conversations
        self._bus = bus
        self._limits = limits
        self._metrics = metrics
        self._webhooks = webhooks
        self._admission = admission or SendAdmission()
        self.committer = GroupCommitter(self._write_and_notify, max_batch=commit_max_batch,
                                        max_in_flight=commit_max_in_flight)

    async def queue_send(self, principal: Principal, request: SendRequest, *,
                         before_notify: BeforeNotifyFn | None = None) -> asyncio.Future[Receipt]:
        """Check a send and queue it for the next group commit; the future gets the receipt.

        Sends are written in the order they were queued, so a transport that queues one client's
        frames in order (and awaits receipts concurrently) keeps that client's messages in order.
        A group message is archived once and gets one entry (with that member's own seq) in every
        member's inbox, the sender's included.
        """
        sender = principal.user
        self._check_rate(sender)
        conversations = self._conversations
        if request.group:
            target = await conversations.group_target(sender, request.group)
        else:
            target = await conversations.direct_target(sender, request.to)
        body: Any = request.body
        if request.kind == "file":
            body = await conversations.attachment(sender, target.conv, request.body)
        await conversations.listed(target)
        return self._enqueue(sender, request, target, body, before_notify)

    async def send_many(self, principal: Principal, requests: Sequence[SendRequest | ImError]
                        ) -> list[Receipt | ImError]:
        """Send a batch for an API caller: each request checked and queued in order (so they share
        group commits, and one conversation's messages keep their order), then every receipt awaited.
        Each outcome is the receipt or the error of that request alone; an error given in
        ``requests`` (an item that did not parse) is passed through."""
        queued: list[asyncio.Future[Receipt] | ImError] = []
        for request in requests:
            if isinstance(request, ImError):
                queued.append(request)
                continue
            try:
                queued.append(await self.queue_send(principal, request))
            except ImError as exc:
                queued.append(exc)
        outcomes: list[Receipt | ImError] = []
        for item in queued:
            if isinstance(item, ImError):
                outcomes.append(item)
                continue
            try:
                outcomes.append(await item)
            except ImError as exc:
                outcomes.append(exc)
        return outcomes

    def queue_send_nowait(self, principal: Principal, request: SendRequest, *,
                          before_notify: BeforeNotifyFn | None = None) -> asyncio.Future[Receipt] | None:
        """:meth:`queue_send` without a wait, when its checks need nothing from the store (a text
        message to a user this node has seen); None means "await :meth:`queue_send`" (nothing was
        checked or counted yet). A transport can then queue the common send in the same event-loop
        turn that read it, with no task of its own."""
        if request.group or request.kind == "file":
            return None
        target = self._conversations.direct_target_known(principal.user, request.to)
        if target is None:
            return None
        self._check_rate(principal.user)
        return self._enqueue(principal.user, request, target, request.body, before_notify)

    def _check_rate(self, sender: str) -> None:
        """The sender's rate, then the node's room (both before anything is read from the store)."""
        if self._limits.sends_per_user is not None:
            self._limits.sends_per_user.check(sender)
        self._admission.check(self.committer, self._metrics)

    def _enqueue(self, sender: str, request: SendRequest, target: Target, body: Any,
                 before_notify: BeforeNotifyFn | None) -> asyncio.Future[Receipt]:
        return self.committer.enqueue(Draft(
            sender=sender, to=target.to, conv=target.conv, kind=request.kind,
            body=body, client_msg_id=request.client_msg_id, recipients=target.recipients,
            before_notify=before_notify,
        ))

    async def _write_and_notify(self, drafts: Sequence[Draft]) -> list[Receipt]:
        self._metrics.commit_batch_messages.observe(len(drafts))
        news = InboxNews()
        with self._metrics.commit_seconds.time():
            receipts = await self._inboxes.append(drafts, news=news)
        self._after_write(drafts, receipts)
        _tell_senders(drafts, receipts)
        if news.heads:
            await self._bus.publish(news)
        return receipts

    def _after_write(self, drafts: Sequence[Draft], receipts: Sequence[Receipt]) -> None:
        """Count the batch and queue its webhooks; synchronous, so it never delays the receipts."""
        metrics, webhooks = self._metrics, self._webhooks
        for draft, receipt in zip(drafts, receipts, strict=False):
            if receipt.duplicate:
                metrics.duplicate_sends.inc()
                continue
            metrics.messages_stored.inc()
            metrics.inbox_entries_written.inc(len(receipt.seqs))
            # Webhooks carry user messages, not the server's own receipt entries.
            if webhooks is not None and draft.kind != RECEIPT_KIND:
                webhooks.enqueue(message_event(
                    msg_id=receipt.msg_id, sender=draft.sender, to=draft.to, conv=receipt.conv,
                    kind=draft.kind, body=draft.body, client_msg_id=receipt.client_msg_id, ts=receipt.ts,
                    seqs=receipt.seqs,
                ))


def _tell_senders(drafts: Sequence[Draft], receipts: Sequence[Receipt]) -> None:
    """Run the drafts' ``before_notify`` hooks (new messages only: a duplicate was notified when it
    was first stored). A failing hook costs its sender a notify it would have skipped, nothing more."""
    for draft, receipt in zip(drafts, receipts, strict=True):
        if draft.before_notify is not None and not receipt.duplicate:
            try:
                draft.before_notify(receipt)
            except Exception:
                log.exception("a before_notify hook failed")
