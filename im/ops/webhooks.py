"""Message webhooks (CIM's message callback): a signed POST to configured URLs for each stored message.

Delivery never slows sending: the send path only calls :meth:`WebhookSender.enqueue`, which puts the
event on a bounded in-memory queue and returns. A few worker tasks POST it to every URL, retrying with
capped exponential backoff. When the queue is full (receivers down for long under load) new events are
dropped and counted rather than growing memory without bound: webhooks are a notification for
integrations, the message itself is safe in the store and in the recipients' inboxes. Events are
at-least-once (a receiver that answered too late gets the event again): deduplicate on ``msg_id``.

Signature: ``X-IM-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`` with the
Unix time in ``X-IM-Timestamp``; receivers recompute it (see :func:`verify`) and refuse old timestamps
to stop replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import tornado.httpclient

from im.ops.metrics import Metrics

__all__ = ["WebhookSender", "message_event", "retry_delay_secs", "sign", "verify", "webhooks_from"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-IM-Signature"
TIMESTAMP_HEADER = "X-IM-Timestamp"
# Receivers should refuse signatures older than this (replay window); verify() uses it by default.
SIGNATURE_TOLERANCE_SECS = 300
# Concurrent POSTs in flight per node: enough to keep a slow receiver from serialising everything,
# few enough that a flood of events cannot open hundreds of sockets.
WORKERS = 4
FIRST_RETRY_SECS = 1.0
MAX_RETRY_SECS = 60.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-IM-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float | None = None,
           tolerance_secs: float = SIGNATURE_TOLERANCE_SECS) -> bool:
    """Receiver side: is ``signature`` valid for ``body`` and ``timestamp``, and recent enough?"""
    if not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_secs:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def retry_delay_secs(attempt: int, *, first_secs: float = FIRST_RETRY_SECS,
                     max_secs: float = MAX_RETRY_SECS) -> float:
    """Delay before re-POSTing after failed attempt number ``attempt`` (1 for the first failure)."""
    return min(max_secs, first_secs * 2 ** min(max(attempt - 1, 0), 30))


@dataclass(slots=True)
class _Delivery:
    url: str
    body: bytes
    event_id: str
    attempt: int = 0


class WebhookSender:
    """Queue of webhook deliveries with ``WORKERS`` tasks POSTing them."""

    def __init__(
        self, urls: list[str], secret: str, *, queue_size: int = 10_000, max_attempts: int = 6,
        timeout_secs: float = 5.0, first_retry_secs: float = FIRST_RETRY_SECS,
        max_retry_secs: float = MAX_RETRY_SECS, metrics: Metrics | None = None,
    ) -> None:
        self.urls = list(urls)
        self.secret = secret
        self.max_attempts = max_attempts
        self.timeout_secs = timeout_secs
        self.first_retry_secs = first_retry_secs
        self.max_retry_secs = max_retry_secs
        self.metrics = metrics
        self.queue: asyncio.Queue[_Delivery] = asyncio.Queue(maxsize=queue_size)
        self.dropped = 0
        self._workers: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._http: tornado.httpclient.AsyncHTTPClient | None = None

    def bind_metrics(self, metrics: Metrics) -> None:
        self.metrics = metrics
        metrics.gauge("im_webhook_queue_depth", "Webhook deliveries waiting (including retries)",
                      lambda: {"": float(self.queue.qsize() + len(self._timers))})

    async def start(self) -> None:
        self._http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=WORKERS)
        self._workers = [asyncio.create_task(self._work(), name=f"webhook-{i}") for i in range(WORKERS)]

    async def close(self) -> None:
        """Stop now; deliveries still queued are dropped (they are notifications, not the messages)."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- the send path's side: never blocks ----------------------------------------------------------

    def enqueue(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every URL; drops (and counts) what does not fit. Never awaits."""
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        event_id = str(event.get("msg_id", ""))
        for url in self.urls:
            self._put(_Delivery(url, body, event_id))

    def _put(self, delivery: _Delivery) -> None:
        try:
            self.queue.put_nowait(delivery)
        except asyncio.QueueFull:
            self.dropped += 1
            self._count("dropped")
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("webhook queue full: %d deliveries dropped so far", self.dropped)

    # -- workers --------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            delivery = await self.queue.get()
            try:
                await self._deliver(delivery)
            except Exception:
                log.exception("webhook delivery to %s failed unexpectedly", delivery.url)
            finally:
                self.queue.task_done()

    async def _deliver(self, delivery: _Delivery) -> None:
        delivery.attempt += 1
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, timestamp, delivery.body),
            TIMESTAMP_HEADER: str(timestamp),
            "X-IM-Event-Id": delivery.event_id,
            "X-IM-Delivery-Attempt": str(delivery.attempt),
            "User-Agent": "im-server-webhooks",
        }
        assert self._http is not None
        try:
            response = await self._http.fetch(
                delivery.url, method="POST", body=delivery.body, headers=headers, raise_error=False,
                connect_timeout=self.timeout_secs, request_timeout=self.timeout_secs, follow_redirects=False,
            )
            status, problem = response.code, f"HTTP {response.code}"
        except Exception as exc:  # refused, reset, DNS: all mean "try again later"
            status, problem = 599, str(exc)
        if 200 <= status < 300:
            self._count("ok")
            return
        if delivery.attempt >= self.max_attempts:
            self._count("failed")
            log.warning("webhook %s to %s given up after %d attempts (%s)", delivery.event_id, delivery.url,
                        delivery.attempt, problem)
            return
        self._count("retry")
        delay = retry_delay_secs(delivery.attempt, first_secs=self.first_retry_secs,
                                 max_secs=self.max_retry_secs)
        log.info("webhook %s to %s failed (%s); retry %d in %.1f s", delivery.event_id, delivery.url,
                 problem, delivery.attempt, delay)
        self._schedule(delivery, delay)

    def _schedule(self, delivery: _Delivery, delay_secs: float) -> None:
        """Re-queue after ``delay_secs`` without holding a worker (other events keep flowing)."""
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(timer)
            self._put(delivery)

        timer = loop.call_later(delay_secs, fire)
        self._timers.add(timer)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.webhook_deliveries.labels(outcome).inc()


def message_event(*, msg_id: str, sender: str, to: str, conv: str, kind: str, body: Any,
                  client_msg_id: str, ts: int, seqs: dict[str, int]) -> dict[str, Any]:
    """The JSON document POSTed for one stored message."""
    return {"type": "message.stored", "msg_id": msg_id, "conv": conv, "from": sender, "to": to,
            "kind": kind, "body": body, "client_msg_id": client_msg_id, "ts": ts,
            "recipients": sorted(seqs)}


def webhooks_from(settings: Any, metrics: Metrics | None = None) -> WebhookSender | None:
    """The sender configured by ``webhook_*`` settings, or ``None`` when no URL is set."""
    urls = [u.strip() for u in settings.webhook_urls.split(",") if u.strip()]
    if not urls:
        return None
    sender = WebhookSender(urls, settings.webhook_secret, queue_size=settings.webhook_queue_size,
                           max_attempts=settings.webhook_max_attempts,
                           timeout_secs=settings.webhook_timeout_secs)
    if metrics is not None:
        sender.bind_metrics(metrics)
    return sender
