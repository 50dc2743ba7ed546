"""Closed-loop REST senders and SDK receivers: the load of the scale-out part (``bench/cluster.py``).

``python -m bench.closedloop`` reads a JSON spec on stdin and prints one JSON result line. Scenarios:

- ``pairs``: N senders, each POSTing ``messages`` one-to-one messages to its own receiver over REST, the
  next one as soon as the receipt of the previous came back (closed loop); each receiver is an SDK client
  (``bench/targets.py``, WebSocket or long-poll: notify -> pull -> ack, as the SDK does). Senders talk to
  ``send_url``, receivers to ``receive_url``: two nodes of a cluster, or one node twice.
- ``group``: every member of one group connected through the SDK to the node named in its entry; the
  first ``senders`` members POST to the group over REST (each to its own node) at ``rate`` group
  messages per second in all for ``secs``; a sender's next send waits for its previous receipt.

A send answered with an error (HTTP status >= 400) or not answered at all is counted, by status, and
sent again with the same ``client_msg_id`` (the server answers a repeat with the first receipt, so a
retry never makes a second message) until a receipt or ``send_deadline_secs``; a 4xx other than 408 and
429 will not change by retrying and ends that send at once (``abandoned``).

Bodies are ``<monotonic ns of the first attempt>:<tag>:<seq>:<padding>``, ``seq`` counting each
sender's messages: the receivers measure end-to-end latency (CLOCK_MONOTONIC is one clock for every
process of the machine) and check that, from each sender, every acknowledged seq arrived once and in
order (``lost``, ``duplicated``, ``reordered``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import tornado.httpclient

from bench import loadgen
from bench.loadgen import close_all, freeze_heap, open_all
from bench.procs import cpu_readings
from bench.stats import summarize
from bench.targets import ImTarget, Target, make_target
from imclient.backoff import backoff_delay
from imclient.errors import ApiError, ConnectionFailed
from imclient.keepalive import KeepAliveConnection
from imclient.policy import CALL_TIMEOUT_SECS

__all__ = ["Books", "Ledger", "Measure", "RestSender", "SendStats", "main", "make_body", "round_result"]

log = logging.getLogger("bench.closedloop")

# Clients connecting at the same time while a job sets up (as bench/loadgen.py).
CONNECT_CONCURRENCY = 200
# The warm-up round (one message per sender) must be delivered within this time.
WARMUP_SECS = 60.0
# 4xx answers that may change when the same request is sent again.
RETRYABLE_4XX = frozenset({408, 429})


class SendStats:
    """What the senders of one round saw: receipts, answers that were not receipts, retries."""

    def __init__(self) -> None:
        self.receipt_ms: list[float] = []
        self.attempts = 0
        self.acked = 0
        self.abandoned = 0
        self.duplicate_receipts = 0
        # By HTTP status ("503"), or "no answer" (refused, reset, timed out).
        self.not_2xx: Counter[str] = Counter()
        # By "<status> <error code>" from the answer's body.
        self.codes: Counter[str] = Counter()
        self.first_send_ns = 0
        self.last_receipt_ns = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "acked": self.acked,
            "abandoned": self.abandoned,
            "duplicate_receipts": self.duplicate_receipts,
            "non_2xx": dict(self.not_2xx),
            "error_codes": dict(self.codes),
            "receipt": summarize(self.receipt_ms).as_dict(),
        }


class RestSender:
    """One user POSTing its messages over one kept-alive connection (the SDK's own HTTP/1.1 client for
    sends, ``imclient/keepalive.py``), one request at a time."""

    def __init__(self, url: str, user: str, token: str, *, deadline_secs: float, rand: random.Random) -> None:
        self.url = url
        self.user = user
        self._token = token
        self._deadline_secs = deadline_secs
        self._rand = rand
        self._connection = KeepAliveConnection()

    async def send(self, fields: Mapping[str, Any], client_msg_id: str, stats: SendStats) -> bool:
        """POST until a receipt (True) or a final answer or the deadline (False, counted abandoned)."""
        payload = {**fields, "client_msg_id": client_msg_id}
        started = time.monotonic()
        stats.first_send_ns = stats.first_send_ns or time.monotonic_ns()
        deadline = started + self._deadline_secs
        attempt = 0
        while True:
            stats.attempts += 1
            timeout = min(CALL_TIMEOUT_SECS, max(0.1, deadline - time.monotonic()))
            retry_after: float | None = None
            try:
                reply = await self._connection.call_json(
                    "POST", self.url, "/api/v1/messages", body=payload, token=self._token,
                    timeout_secs=timeout,
                )
            except ApiError as error:
                stats.not_2xx[str(error.status)] += 1
                stats.codes[f"{error.status} {error.code}"] += 1
                if 400 <= error.status < 500 and error.status not in RETRYABLE_4XX:
                    log.warning("%s: send %s refused for good: %s", self.user, client_msg_id, error)
                    stats.abandoned += 1
                    return False
                retry_after = error.retry_after_secs
            except ConnectionFailed as error:
                stats.not_2xx["no answer"] += 1
                log.info("%s: send %s not answered: %s", self.user, client_msg_id, error)
            else:
                now_ns = time.monotonic_ns()
                stats.receipt_ms.append((time.monotonic() - started) * 1000)
                stats.acked += 1
                stats.duplicate_receipts += bool(isinstance(reply, dict) and reply.get("duplicate"))
                stats.last_receipt_ns = max(stats.last_receipt_ns, now_ns)
                return True
            wait = retry_after if retry_after is not None else backoff_delay(attempt, rand=self._rand)
            attempt += 1
            if time.monotonic() + wait >= deadline:
                stats.abandoned += 1
                return False
            await asyncio.sleep(wait)

    def close(self) -> None:
        self._connection.close()


def make_body(tag: str, seq: int, pad_chars: int) -> str:
    return f"{time.monotonic_ns()}:{tag}:{seq}:{'x' * pad_chars}"


class Ledger:
    """The deliveries of one round (one tag), by (receiver, sender): each seq once, in order."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.latencies_ms: list[float] = []
        self.seen: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
        self._highest: dict[tuple[str, str], int] = {}
        self.delivered = 0  # distinct (receiver, sender, seq)
        self.duplicated = 0
        self.reordered = 0
        self.last_ns = 0
        self._expected: int | None = None
        self._complete = asyncio.Event()

    def record(self, receiver: str, sender: str, sent_ns: int, seq: int) -> None:
        now_ns = time.monotonic_ns()
        key = (receiver, sender)
        seen = self.seen[key]
        if seq in seen:
            self.duplicated += 1
            return
        seen.add(seq)
        if seq < self._highest.get(key, -1):
            self.reordered += 1  # an earlier message of this sender after a later one
        else:
            self._highest[key] = seq
        self.delivered += 1
        self.latencies_ms.append((now_ns - sent_ns) / 1e6)
        self.last_ns = now_ns
        if self._expected is not None and self.delivered >= self._expected:
            self._complete.set()

    async def wait(self, expected: int, timeout_secs: float) -> None:
        """Until ``expected`` distinct deliveries arrived, or the timeout (the rest is lost). May be
        called again with a larger ``expected`` (a round sent in slices waits after each)."""
        self._expected = expected
        if self.delivered >= expected:
            return
        self._complete.clear()  # set by an earlier, smaller ``expected``
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._complete.wait(), max(0.01, timeout_secs))

    def lost(self, acked: Mapping[str, Sequence[int]], receivers_of: Callable[[str], Sequence[str]]) -> int:
        """Acknowledged sends that some receiver of theirs never got."""
        return sum(
            1
            for sender, seqs in acked.items()
            for receiver in receivers_of(sender)
            for seq in seqs
            if seq not in self.seen.get((receiver, sender), ())
        )


class Books:
    """Hands each delivery to the ledger of its round, by the tag in its body (receiver callbacks are
    bound once, at connect, and outlive the warm-up round)."""

    def __init__(self) -> None:
        self.ledgers: dict[str, Ledger] = {}
        self.foreign = 0  # bodies of no round of this process

    def new(self, tag: str) -> Ledger:
        ledger = self.ledgers[tag] = Ledger(tag)
        return ledger

    def receiver(self, user: str) -> Callable[[str, str, Any], None]:
        def on_message(sender: str, body: str, notify: Any = None) -> None:
            try:
                sent_ns, tag, seq, _ = body.split(":", 3)
                ledger = self.ledgers[tag]
                ledger.record(user, sender, int(sent_ns), int(seq))
            except (ValueError, KeyError):
                self.foreign += 1

        return on_message


def _reconnects(targets: Sequence[Target]) -> int:
    return sum(t.client.reconnects for t in targets if isinstance(t, ImTarget))


def _window(ledger: Ledger, stats: SendStats) -> float:
    """From the first send to the last receipt or delivery, whichever came later (seconds)."""
    end_ns = max(ledger.last_ns, stats.last_receipt_ns)
    return max(1e-9, (end_ns - stats.first_send_ns) / 1e9) if stats.first_send_ns else 0.0


def round_result(ledger: Ledger, stats: SendStats, *, lost: int, expected: int) -> dict[str, Any]:
    secs = _window(ledger, stats)
    return {
        **stats.as_dict(),
        "expected": expected,
        "delivered": ledger.delivered,
        "lost": lost,
        "duplicated": ledger.duplicated,
        "reordered": ledger.reordered,
        "secs": secs,
        "delivered_per_sec": ledger.delivered / secs if secs else 0.0,
        "latency": summarize(ledger.latencies_ms).as_dict(),
    }


async def _redis_calls(url: str | None) -> dict[str, int]:
    """Commands Redis has executed so far, by command (``INFO commandstats``); {} without Redis."""
    if not url:
        return {}
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


class Measure:
    """CPU of the given processes (servers, store, Redis) and of this load generator over one round,
    and the commands Redis executed meanwhile (the cluster's cross-node traffic)."""

    def __init__(self, pids: Mapping[str, int], redis_url: str | None) -> None:
        self._pids = dict(pids)
        self._redis_url = redis_url
        self._redis_before: dict[str, int] = {}

    async def start(self) -> Measure:
        self._redis_before = await _redis_calls(self._redis_url)
        self._before = cpu_readings(self._pids)
        self._own_before = time.process_time()
        self._started = time.monotonic()
        return self

    async def finish(self) -> dict[str, Any]:
        after = cpu_readings(self._pids)
        wall = max(1e-9, time.monotonic() - self._started)
        own = time.process_time() - self._own_before
        redis_after = await _redis_calls(self._redis_url)
        calls = {k: v - self._redis_before.get(k, 0) for k, v in redis_after.items()}
        calls.pop("info", None)  # this measurement's own
        return {
            "cpu_secs": {k: after[k] - self._before[k] for k in after if k in self._before},
            "loadgen_cpu_share": own / wall,
            "redis_calls": {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v > 0},
        }


def _job_facts(warm: dict[str, Any], connect_secs: float, errors: list[str], reconnects: int,
               books: Books) -> dict[str, Any]:
    """What every job reports besides its measured round: the warm-up, connecting, reconnects, and
    messages that belonged to no sender of the job."""
    return {
        "warmup": {k: warm[k] for k in ("expected", "delivered", "lost", "secs", "non_2xx")},
        "connect_secs": connect_secs,
        "connect_error_count": len(errors),
        "connect_errors": errors[:5],
        "reconnects": reconnects,
        "foreign": books.foreign,
    }


async def _warm_then_measure(
    spec: dict[str, Any], warm_up: Callable[[], Awaitable[dict[str, Any]]],
    measured: Callable[[], Awaitable[dict[str, Any]]], senders: Sequence[RestSender], clients: Sequence[Any],
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The warm-up round, then the measured one with the processes' CPU and Redis counted around it;
    every sender and client is closed whatever happens. Returns both rounds and the SDK reconnects."""
    try:
        warm = await warm_up()
        measure = await Measure(spec.get("pids", {}), spec.get("redis_url")).start()
        result = await measured()
        result.update(await measure.finish())
    finally:
        for sender in senders:
            sender.close()
        reconnects = _reconnects(clients)
        await close_all(clients)
    return warm, result, reconnects


async def pairs(spec: dict[str, Any], http: tornado.httpclient.AsyncHTTPClient) -> dict[str, Any]:
    books = Books()
    receivers = [
        make_target("im", spec["receive_url"], c, on_message=books.receiver(c["user"]), http=http)
        for c in spec["receivers"]
    ]
    rand = random.Random(spec.get("seed", 1))
    deadline_secs = spec.get("send_deadline_secs", 60.0)
    senders = [
        RestSender(spec["send_url"], c["user"], c["token"], deadline_secs=deadline_secs, rand=rand)
        for c in spec["senders"]
    ]
    partner = {s.user: r.user for s, r in zip(senders, receivers, strict=True)}
    pad_chars = spec.get("pad_chars", 48)
    connect_started = time.monotonic()
    errors = await open_all(receivers, concurrency=CONNECT_CONCURRENCY)
    connect_secs = time.monotonic() - connect_started
    freeze_heap()

    async def one_round(tag: str, messages: int, drain_secs: float) -> dict[str, Any]:
        ledger, stats = books.new(tag), SendStats()
        acked: dict[str, list[int]] = {s.user: [] for s in senders}

        async def sender_loop(sender: RestSender) -> None:
            to = partner[sender.user]
            for seq in range(messages):
                body = make_body(tag, seq, pad_chars)
                if await sender.send({"to": to, "body": body}, f"{tag}-{sender.user}-{seq}", stats):
                    acked[sender.user].append(seq)

        await asyncio.gather(*(sender_loop(s) for s in senders))
        expected = sum(len(seqs) for seqs in acked.values())
        await ledger.wait(expected, drain_secs)
        lost = ledger.lost(acked, lambda sender: [partner[sender]])
        return round_result(ledger, stats, lost=lost, expected=expected)

    warm, result, reconnects = await _warm_then_measure(
        spec, lambda: one_round("w", 1, spec.get("warmup_secs", WARMUP_SECS)),
        lambda: one_round("m", spec["messages"], spec["drain_secs"]), senders, receivers)
    return {
        **result,
        "pairs": len(senders),
        "messages_per_sender": spec["messages"],
        "transport": spec["receivers"][0].get("transport", "ws") if spec["receivers"] else "",
        **_job_facts(warm, connect_secs, errors, reconnects, books),
    }


async def group(spec: dict[str, Any], http: tornado.httpclient.AsyncHTTPClient) -> dict[str, Any]:
    books = Books()
    members = spec["members"]
    targets = [
        make_target("im", m["url"], m, on_message=books.receiver(m["user"]), http=http) for m in members
    ]
    rand = random.Random(spec.get("seed", 1))
    deadline_secs = spec.get("send_deadline_secs", 60.0)
    senders = [
        RestSender(m["url"], m["user"], m["token"], deadline_secs=deadline_secs, rand=rand)
        for m in members[: spec["senders"]]
    ]
    users = [m["user"] for m in members]
    group_id, pad_chars = spec["group"], spec.get("pad_chars", 48)
    connect_started = time.monotonic()
    errors = await open_all(targets, concurrency=CONNECT_CONCURRENCY)
    connect_secs = time.monotonic() - connect_started
    freeze_heap()

    def others(sender: str) -> list[str]:
        return [u for u in users if u != sender]

    async def one_round(tag: str, rate: float, secs: float, drain_secs: float) -> dict[str, Any]:
        """Send ``rate`` group messages/s in all for ``secs`` (at least one per sender); sender i of
        k sends the messages numbered i, i + k, i + 2k ... of the schedule, each after its previous
        receipt (late, it sends at once: the offered rate drops rather than the order)."""
        ledger, stats = books.new(tag), SendStats()
        acked: dict[str, list[int]] = {s.user: [] for s in senders}
        started = time.monotonic()
        count = max(len(senders), round(rate * secs))

        async def sender_loop(index: int, sender: RestSender) -> None:
            for seq, slot in enumerate(range(index, count, len(senders))):
                delay = started + slot / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = make_body(tag, seq, pad_chars)
                if await sender.send({"group": group_id, "body": body}, f"{tag}-{sender.user}-{seq}", stats):
                    acked[sender.user].append(seq)

        await asyncio.gather(*(sender_loop(i, s) for i, s in enumerate(senders)))
        sending_secs = time.monotonic() - started
        expected = sum(len(seqs) for seqs in acked.values()) * (len(users) - 1)
        await ledger.wait(expected, drain_secs)
        result = round_result(ledger, stats, lost=ledger.lost(acked, others), expected=expected)
        result.update({"group_messages": count, "rate": rate, "sending_secs": sending_secs})
        return result

    warm, result, reconnects = await _warm_then_measure(
        spec, lambda: one_round("w", len(senders), 1.0, spec.get("warmup_secs", WARMUP_SECS)),
        lambda: one_round("m", spec["rate"], spec["secs"], spec["drain_secs"]), senders, targets)
    by_url = Counter(m["url"] for m in members)
    return {
        **result,
        "members": len(members),
        "members_per_node": dict(by_url),
        "senders": len(senders),
        "senders_per_node": dict(Counter(m["url"] for m in members[: len(senders)])),
        "fanout": len(members) - 1,
        **_job_facts(warm, connect_secs, errors, reconnects, books),
    }


SCENARIOS = {"pairs": pairs, "group": group}


def main() -> int:
    # Fewer HTTP slots than the chat's generator: these SDK clients' long-polls and sends have their own.
    return loadgen.main(SCENARIOS, http_slots=2000)


if __name__ == "__main__":
    sys.exit(main())
