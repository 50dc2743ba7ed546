"""The load generator: one process, one event loop, many clients of one server.

``python -m bench.loadgen`` reads a JSON spec on stdin and prints one JSON result line. Scenarios:
- ``chat``: clients in pairs, each sending to its partner, open-loop at a ladder of aggregate rates;
- ``group``: every member of one group connected, some members sending to the group;
- ``idle_worker``: holds idle WebSocket and long-poll clients, connecting and leaving on command (the
  orchestrator reads the server's RSS and connections between the phases);
- ``storm``: K clients with a backlog waiting connect at once and pull it.

Latency is end to end: from the send call in the sender to the message reaching the recipient's
callback. The send time travels in the body (``<monotonic ns>:<id>:<padding>``); CLOCK_MONOTONIC is
one clock for every process of the machine, so senders and recipients may live in different processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tornado.httpclient
from pymongo import AsyncMongoClient

from bench.procs import cpu_readings, cpu_spent, raise_nofile_limit, rss_kb
from bench.stats import summarize
from bench.targets import ImTarget, Target, make_target
from im.ops import eventloop

__all__ = ["Recorder", "close_all", "freeze_heap", "main", "open_all"]

log = logging.getLogger("bench.loadgen")

# Sends one sender may have waiting for their receipt; beyond this the generator skips (and counts)
# sends instead of queueing without bound: skipped sends are a sign of saturation. 8 covers 1.6 s of
# receipt latency at 1,000 msg/s over 200 senders; a larger bound (32) only queued more work on a
# saturated server, which it then worked off during the next step or part.
MAX_IN_FLIGHT_PER_SENDER = 8
# The generator's clock tick: sends due within a tick go out together.
TICK_SECS = 0.002
# Clients connecting at the same time while a scenario sets up.
CONNECT_CONCURRENCY = 200
# A step counts as saturated when less than this share of what was offered was delivered in time.
SATURATED_BELOW = 0.85
# The last part of a step's sending window in which its delivery rate is measured (steady state).
STEADY_SHARE = 0.5


def make_body(msg_id: str, pad_chars: int) -> str:
    return f"{time.monotonic_ns()}:{msg_id}:{'x' * pad_chars}"


def parse_body(body: str) -> tuple[int, str]:
    sent_ns, msg_id, _ = body.split(":", 2)
    return int(sent_ns), msg_id


class Recorder:
    """What one step saw: sends, their receipts, deliveries and their latencies."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.latencies_ms: list[float] = []
        self.receive_times: list[float] = []
        self.receipt_ms: list[float] = []
        # Ours only: notify reaching the SDK -> message in the callback, by the recipient's transport.
        self.notify_ms: dict[str, list[float]] = {"ws": [], "longpoll": []}
        self.before_notify = 0
        self.sent_ok = 0
        self.skipped = 0
        self.errors: Counter[str] = Counter()
        self.delivered = 0
        self.stale = 0
        self.expected: int | None = None
        self.all_delivered = asyncio.Event()

    def on_message(self, sender: str, body: str, notify: tuple[str, float] | None = None) -> None:
        now_ns = time.monotonic_ns()
        try:
            sent_ns, msg_id = parse_body(body)
        except ValueError:
            return
        if not msg_id.startswith(self.prefix):
            self.stale += 1  # a late message of an earlier step
            return
        self.delivered += 1
        self.latencies_ms.append((now_ns - sent_ns) / 1e6)
        self.receive_times.append(now_ns / 1e9)
        if notify is not None:
            self.notify_ms.setdefault(notify[0], []).append(notify[1])
        self.before_notify += notify is None
        if self.expected is not None and self.delivered >= self.expected:
            self.all_delivered.set()

    async def wait_delivered(self, expected: int, timeout_secs: float) -> None:
        """Wait until ``expected`` deliveries arrived (or the timeout: the rest counts as lost)."""
        self.expected = expected
        if self.delivered >= expected:
            self.all_delivered.set()
            return
        self.all_delivered.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_delivered.wait(), max(0.01, timeout_secs))

    def delivered_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.receive_times if start <= t <= end)


class Router:
    """Hands each delivery to the recorder of the step that sent it (the callbacks are bound at
    connect). By the step's prefix, not "the running step": a saturated step's late deliveries still
    count for it (and its latency), and are not mistaken for the next step's."""

    def __init__(self) -> None:
        self.recorders: dict[str, Recorder] = {}
        self.recorder = self.new("warmup-")

    def new(self, prefix: str) -> Recorder:
        self.recorder = self.recorders[prefix] = Recorder(prefix)
        return self.recorder

    def delivered_between(self, start: float, end: float) -> int:
        """Deliveries of any step's messages that arrived between ``start`` and ``end``."""
        return sum(r.delivered_between(start, end) for r in self.recorders.values())

    def on_message(self, sender: str, body: str, notify: tuple[str, float] | None = None) -> None:
        _, _, rest = body.partition(":")
        prefix = rest[: rest.find("-") + 1]
        recorder = self.recorders.get(prefix)
        if recorder is None or recorder is self.recorder:
            self.recorder.on_message(sender, body, notify)
        else:
            recorder.on_message(sender, body, notify)
            self.recorder.stale += 1


async def open_all(targets: Sequence[Target], *, concurrency: int = CONNECT_CONCURRENCY) -> list[str]:
    """Connect every target, at most ``concurrency`` at a time; return the errors.

    A long-poll client of ours holds its slot until its first poll answered (that poll does not wait,
    so it takes one round trip). Starting them all at once instead (it was so) sent 5,000 first polls
    to the server together: most outlived the client's 10 s answer timeout, were retried, and the
    retries queued behind the abandoned ones (605 s to park 5,000 polls, 38,794 reconnects).
    """
    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(target: Target) -> None:
        async with gate:
            try:
                await target.open()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(t) for t in targets))
    return errors


async def close_all(targets: Sequence[Target]) -> None:
    async def one(target: Target) -> None:
        try:
            await asyncio.wait_for(target.close(), 10)
        except Exception:
            log.debug("closing %s failed", target.user, exc_info=True)

    await asyncio.gather(*(one(t) for t in targets))


async def generate(
    recorder: Recorder,
    *,
    rate: float,
    secs: float,
    senders: Sequence[tuple[Target, Callable[[Target, str], Any]]],
    pad_chars: int,
) -> set[asyncio.Task[None]]:
    """Open-loop: issue ``rate`` sends per second for ``secs``, spread round-robin over ``senders``.

    ``senders`` pairs a target with the coroutine function that sends one body from it. Sends do not
    wait for each other; a sender with too many unanswered sends skips (see MAX_IN_FLIGHT_PER_SENDER).
    """
    in_flight = [0] * len(senders)
    # Only the sends still open: a step issues thousands, and keeping the finished ones made the
    # collector scan them all for the rest of the step.
    tasks: set[asyncio.Task[None]] = set()
    counter = itertools.count()
    turn = itertools.cycle(range(len(senders)))

    async def one(index: int) -> None:
        target, send = senders[index]
        in_flight[index] += 1
        started = time.monotonic()
        try:
            await send(target, make_body(f"{recorder.prefix}{next(counter)}", pad_chars))
            recorder.sent_ok += 1
            recorder.receipt_ms.append((time.monotonic() - started) * 1000)
        except Exception as exc:
            recorder.errors[type(exc).__name__] += 1
        finally:
            in_flight[index] -= 1

    started = time.monotonic()
    issued = 0
    while (elapsed := time.monotonic() - started) < secs:
        due = int(rate * elapsed) - issued
        for _ in range(due):
            index = next(turn)
            if in_flight[index] >= MAX_IN_FLIGHT_PER_SENDER:
                recorder.skipped += 1
            else:
                task = asyncio.create_task(one(index))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        issued += max(due, 0)
        await asyncio.sleep(TICK_SECS)
    return tasks


class StoreCounters:
    """The store's operation counters (``serverStatus.opcounters``), read around a step: how many store
    operations one delivered message costs, by kind."""

    def __init__(self, url: str | None) -> None:
        self._client = AsyncMongoClient(url, directConnection=True) if url else None

    async def read(self) -> dict[str, int]:
        if self._client is None:
            return {}
        status = await self._client.admin.command("serverStatus")
        return {k: int(v) for k, v in status.get("opcounters", {}).items()}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


async def run_step(
    router: Router,
    prefix: str,
    *,
    rate: float,
    secs: float,
    drain_secs: float,
    senders: Sequence[tuple[Target, Callable[[Target, str], Any]]],
    fanout: int,
    pad_chars: int,
    counters: StoreCounters | None = None,
    pids: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One measured step at ``rate`` sends/s; each send should produce ``fanout`` deliveries.

    ``pids`` names the processes (``server``, ``store``) whose CPU seconds over the step, from its
    start to its drain deadline, are reported (``cpu_secs``; per delivery in the report).

    After the sending window the step waits for receipts and deliveries until one deadline,
    ``drain_secs`` later (a saturated step would otherwise wait for its whole queue); what is still
    on its way then keeps counting for this step (see :func:`finish_step`).
    """
    recorder = router.new(prefix)
    ops_before = await counters.read() if counters else {}
    procs_before = cpu_readings(pids or {})
    cpu_before = time.process_time()
    start = time.monotonic()
    tasks = await generate(recorder, rate=rate, secs=secs, senders=senders, pad_chars=pad_chars)
    end = time.monotonic()
    deadline = end + drain_secs
    if tasks:
        await asyncio.wait(set(tasks), timeout=max(0.01, deadline - time.monotonic()))
    await recorder.wait_delivered(recorder.sent_ok * fanout, deadline - time.monotonic())
    procs_cpu = cpu_spent(procs_before, pids or {})
    ops_after = await counters.read() if counters else {}
    window = end - start
    # The delivery rate is measured over the window's second half, whoever sent the messages: in
    # steady state that is the throughput. Counting only this step's deliveries inside the whole window
    # (kept below as `own_in_window`) misses the messages sent during its last latency's worth of
    # seconds, so it reported a step that delivered everything 0.6 s after sending as "saturated".
    steady_from = start + window * (1 - STEADY_SHARE)
    delivered_rate = router.delivered_between(steady_from, end) / (end - steady_from)
    own_in_window_rate = recorder.delivered_between(start, end) / window
    offered_deliveries = rate * fanout
    step = {
        "prefix": prefix,
        "rate": rate,
        "secs": round(window, 3),
        "drain_used_secs": round(time.monotonic() - end, 3),
        "fanout": fanout,
        "offered_deliveries_per_sec": offered_deliveries,
        "skipped": recorder.skipped,
        "delivered_per_sec": delivered_rate,
        "own_in_window_per_sec": own_in_window_rate,
        "loadgen_cpu_share": (time.process_time() - cpu_before) / max(1e-9, time.monotonic() - start),
        "saturated": delivered_rate < SATURATED_BELOW * offered_deliveries,
        "store_ops_per_delivery": {
            k: (ops_after[k] - ops_before.get(k, 0)) / max(1, recorder.delivered) for k in ops_after
        },
        "sends_open_at_step_end": len(tasks),
        "cpu_secs": procs_cpu,
        "delivered_at_step_end": recorder.delivered,
    }
    finish_step(step, recorder)
    step["_tasks"] = list(tasks)
    return step


def finish_step(step: dict[str, Any], recorder: Recorder) -> dict[str, Any]:
    """(Re)compute the step's counts and latencies from its recorder, which may have received late
    deliveries since: ``late`` came after the step's drain deadline, ``lost`` never came."""
    fanout = step["fanout"]
    expected = recorder.sent_ok * fanout
    step.update(
        {
            "sent_ok": recorder.sent_ok,
            "send_errors": dict(recorder.errors),
            "delivered": recorder.delivered,
            "expected": expected,
            "late": max(0, recorder.delivered - step["delivered_at_step_end"]),
            "lost": max(0, expected - recorder.delivered),
            "latency": summarize(recorder.latencies_ms).as_dict(),
            "receipt": summarize(recorder.receipt_ms).as_dict(),
            "notify_to_receive": {
                via: summarize(values).as_dict() for via, values in recorder.notify_ms.items() if values
            },
            "before_notify": recorder.before_notify,
        }
    )
    return step


async def final_drain(router: Router, steps: Sequence[dict[str, Any]], drain_secs: float) -> float:
    """After the last step: give every step's open sends and deliveries one shared ``drain_secs``,
    then recompute the steps, so late deliveries count as late (with their latency), not lost.
    Also lets a saturated server work off its queue before the clients leave and the next part
    starts on the same server. Returns the seconds it took."""
    started = time.monotonic()
    deadline = started + drain_secs
    open_tasks = [t for step in steps for t in step.pop("_tasks", [])]
    if open_tasks:
        await asyncio.wait(open_tasks, timeout=max(0.01, deadline - time.monotonic()))
    for step in steps:
        recorder = router.recorders[step["prefix"]]
        await recorder.wait_delivered(recorder.sent_ok * step["fanout"], deadline - time.monotonic())
        finish_step(step, recorder)
    return time.monotonic() - started


def _targets(spec: dict[str, Any], router: Router, http: tornado.httpclient.AsyncHTTPClient) -> list[Target]:
    options = {"poll_timeout_secs": spec["poll_timeout_secs"]} if spec.get("poll_timeout_secs") else {}
    return [
        make_target(spec["target"], spec["url"], {**options, **c}, on_message=router.on_message, http=http)
        for c in spec["clients"]
    ]


async def _warm_up(
    router: Router,
    senders: Sequence[tuple[Target, Callable[[Target, str], Any]]],
    fanout: int,
    timeout_secs: float,
) -> dict[str, Any]:
    """One message from every sender, delivered before measuring: long-pollers are then connected,
    connections are warm, and a broken setup fails here instead of producing numbers."""
    step = await run_step(
        router,
        "warmup-",
        rate=max(1.0, len(senders) / 1.0),
        secs=1.0,
        drain_secs=timeout_secs,
        senders=senders,
        fanout=fanout,
        pad_chars=8,
    )
    step.pop("_tasks", None)
    return step


def freeze_heap() -> None:
    """Call once the clients are connected: what exists then lives until the end, so the collector
    stops scanning it. Measured at 1,000 msg/s: full collections of the generator's heap took up to
    118 ms, a stall of every client that the report would count as the server's latency."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, *gc.get_threshold()[1:])  # as the server does (see server.py)


def _touch(path: str, text: str) -> None:
    """A tiny local file write (a marker for the orchestrator); not worth an executor round trip."""
    Path(path).write_text(text)


async def _send_direct(target: Target, to: str, body: str) -> None:
    await target.send(to, body)


async def chat(spec: dict[str, Any], http: tornado.httpclient.AsyncHTTPClient) -> dict[str, Any]:
    """The 1:1 ladder. Stops at the first saturated step, except that the rates in ``must_reach``
    are measured anyway (the issue sets its latency targets at 1,000 msg/s): a server saturated at
    250 msg/s skips 500 and is still measured at 1,000, then the ladder ends."""
    router = Router()
    targets = _targets(spec, router, http)
    connect_started = time.monotonic()
    errors = await open_all(targets)
    connect_secs = time.monotonic() - connect_started
    freeze_heap()
    senders: list[tuple[Target, Callable[[Target, str], Any]]] = []
    for first, second in zip(targets[::2], targets[1::2], strict=True):
        senders.append((first, lambda t, b, to=second.user: _send_direct(t, to, b)))
        senders.append((second, lambda t, b, to=first.user: _send_direct(t, to, b)))
    counters = StoreCounters(spec.get("store_url"))
    rates = [float(r) for r in spec["rates"]]
    must_reach = {float(r) for r in spec.get("must_reach", [])}
    stop_at_saturation = spec.get("stop_at_saturation", True)
    steps: list[dict[str, Any]] = []
    skipped_rates: list[float] = []
    final_drain_secs = 0.0
    try:
        warm = await _warm_up(router, senders, 1, spec.get("warmup_secs", 60.0))
        saturated = False
        for index, rate in enumerate(rates):
            if saturated and stop_at_saturation and rate not in must_reach:
                skipped_rates.append(rate)
                continue
            if spec.get("step_started_file"):  # lets a profiler start with the measured step
                _touch(spec["step_started_file"], f"{rate:g}\n")
            step = await run_step(
                router,
                f"r{index}-",
                rate=rate,
                secs=spec["step_secs"],
                drain_secs=spec["drain_secs"],
                senders=senders,
                fanout=1,
                pad_chars=spec.get("pad_chars", 48),
                counters=counters,
                pids=spec.get("pids"),
            )
            steps.append(step)
            print(json.dumps({"progress": f"rate {rate:g}/s"}), file=sys.stderr, flush=True)
            saturated = saturated or step["saturated"]
            if saturated and stop_at_saturation and not any(r > rate for r in must_reach & set(rates)):
                skipped_rates += [r for r in rates if r > rate]
                break
        final_drain_secs = await final_drain(router, steps, spec["drain_secs"])
    finally:
        for step in steps:
            step.pop("_tasks", None)
        await counters.close()
        await close_all(targets)
    return {
        "connect_errors": errors[:5],
        "connect_error_count": len(errors),
        "connect_secs": connect_secs,
        "warmup": warm,
        "steps": steps,
        "skipped_rates": skipped_rates,
        "final_drain_secs": final_drain_secs,
        "clients": len(targets),
    }


async def group(spec: dict[str, Any], http: tornado.httpclient.AsyncHTTPClient) -> dict[str, Any]:
    """One group of every client; ``senders`` of them send to it at ``rate`` group messages per second.

    ``mode`` ``group`` uses the server's group send; ``direct`` (a server without the group API) sends
    one one-to-one message per other member for each group message.
    """
    router = Router()
    targets = _targets(spec, router, http)
    errors = await open_all(targets)
    name, mode = spec["group"], spec.get("mode", "group")
    for target in targets:
        await target.join(name)
    freeze_heap()
    members = [t.user for t in targets]

    async def send_group(target: Target, body: str) -> None:
        await target.send_group(name, body)

    async def send_each(target: Target, body: str) -> None:
        await asyncio.gather(*(target.send(user, body) for user in members if user != target.user))

    send = send_group if mode == "group" else send_each
    senders = [(t, send) for t in targets[: spec["senders"]]]
    fanout = len(targets) - 1
    counters = StoreCounters(spec.get("store_url"))
    try:
        warm = await _warm_up(router, senders[:1], fanout, spec.get("warmup_secs", 60.0))
        step = await run_step(
            router,
            "g-",
            rate=spec["rate"],
            secs=spec["secs"],
            drain_secs=spec["drain_secs"],
            senders=senders,
            fanout=fanout,
            pad_chars=spec.get("pad_chars", 48),
            counters=counters,
            pids=spec.get("pids"),
        )
        await final_drain(router, [step], spec["drain_secs"])
    finally:
        await counters.close()
        await close_all(targets)
    return {
        "connect_error_count": len(errors),
        "connect_errors": errors[:5],
        "warmup": warm,
        "step": step,
        "members": len(targets),
        "mode": mode,
    }


async def idle_worker(spec: dict[str, Any], http: tornado.httpclient.AsyncHTTPClient) -> dict[str, Any]:
    """One of several processes holding idle clients, driven phase by phase by the orchestrator.

    Commands arrive one per line on stdin: ``ws`` connects this worker's WebSocket clients, ``lp`` starts
    its long-poll clients (each answers once its first poll did; the orchestrator then watches the
    server's parked polls), ``stats`` only reports (reconnects so far), ``leave`` closes every client.
    Each command is answered with one JSON line on stdout. Several
    workers, because one process cannot keep the pings of 15,000 SDK clients on time.
    """
    targets = _targets(spec, Router(), http)
    ws = [t for t in targets if isinstance(t, ImTarget) and t.client.transport == "ws"]
    lp = [t for t in targets if not (isinstance(t, ImTarget) and t.client.transport == "ws")]
    loop = asyncio.get_running_loop()
    own_before = rss_kb_self()
    errors: list[str] = []
    while command := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        started = time.monotonic()
        concurrency = spec.get("connect_concurrency", CONNECT_CONCURRENCY)
        if command == "ws":
            errors += await open_all(ws, concurrency=concurrency)
        elif command == "lp":
            errors += await open_all(lp, concurrency=concurrency)
        elif command == "leave":
            await close_all(targets)
        reply = {
            "done": command,
            "secs": time.monotonic() - started,
            "errors": len(errors),
            "error_samples": errors[:3],
            "rss_delta_kb": rss_kb_self() - own_before,
            "reconnects": sum(t.client.reconnects for t in targets if isinstance(t, ImTarget)),
        }
        print(json.dumps(reply), flush=True)
        if command == "leave":
            break
    return {"clients": len(targets)}


def rss_kb_self() -> int:
    return rss_kb(os.getpid())


async def storm(spec: dict[str, Any], http: tornado.httpclient.AsyncHTTPClient) -> dict[str, Any]:
    """Seed a backlog of ``backlog`` messages for every client, then connect all clients at once and
    time until each has received its whole backlog."""
    seed_router = Router()
    seeders = [
        make_target("im", spec["url"], c, on_message=seed_router.on_message, http=http)
        for c in spec["seeders"]
    ]
    await open_all(seeders)
    users = [c["user"] for c in spec["clients"]]
    backlog = spec["backlog"]
    gate = asyncio.Semaphore(spec.get("seed_concurrency", 64))
    seed_errors = 0

    async def seed(index: int, user: str) -> None:
        nonlocal seed_errors
        async with gate:
            try:
                await seeders[index % len(seeders)].send(user, make_body("seed-0", 32))
            except Exception:
                seed_errors += 1

    started = time.monotonic()
    await asyncio.gather(*(seed(i, u) for i, u in enumerate(users * backlog)))
    seed_secs = time.monotonic() - started
    await close_all(seeders)

    received: Counter[str] = Counter()
    caught_up_at: dict[str, float] = {}
    storm_started = 0.0
    all_caught_up = asyncio.Event()

    def counting(user: str) -> Callable[[str, str, tuple[str, float] | None], None]:
        def on_message(sender: str, body: str, notify: tuple[str, float] | None = None) -> None:
            received[user] += 1
            if received[user] == backlog:
                caught_up_at[user] = time.monotonic() - storm_started
                if len(caught_up_at) == len(users):
                    all_caught_up.set()

        return on_message

    targets = [
        make_target("im", spec["url"], c, on_message=counting(c["user"]), http=http) for c in spec["clients"]
    ]
    storm_started = time.monotonic()
    procs_before = cpu_readings(spec.get("pids", {}))
    cpu_before = time.process_time()
    errors = await open_all(targets, concurrency=len(targets))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_caught_up.wait(), spec["timeout_secs"])
    total_secs = time.monotonic() - storm_started
    procs_cpu = cpu_spent(procs_before, spec.get("pids", {}))
    cpu_share = (time.process_time() - cpu_before) / max(1e-9, total_secs)
    reconnects = sum(t.client.reconnects for t in targets if isinstance(t, ImTarget))
    await close_all(targets)
    times_ms = [v * 1000 for v in caught_up_at.values()]
    delivered = sum(min(n, backlog) for n in received.values())
    return {
        "clients": len(targets),
        "backlog": backlog,
        "seed_secs": seed_secs,
        "seed_errors": seed_errors,
        "caught_up": len(caught_up_at),
        "catch_up": summarize(times_ms).as_dict(),
        "total_secs": total_secs,
        "delivered": delivered,
        "delivered_per_sec": delivered / max(1e-9, max(caught_up_at.values(), default=total_secs)),
        "connect_error_count": len(errors),
        "connect_errors": errors[:5],
        "reconnects": reconnects,
        "loadgen_cpu_share": cpu_share,
        "cpu_secs": procs_cpu,
        "ws": sum(1 for c in spec["clients"] if c.get("transport") == "ws"),
        "longpoll": sum(1 for c in spec["clients"] if c.get("transport") == "longpoll"),
    }


SCENARIOS = {"chat": chat, "group": group, "idle_worker": idle_worker, "storm": storm}


Scenario = Callable[[dict[str, Any], tornado.httpclient.AsyncHTTPClient], Awaitable[dict[str, Any]]]


async def run(spec: dict[str, Any], scenarios: Mapping[str, Scenario] | None = None, *,
              http_slots: int = 20000) -> dict[str, Any]:
    # One shared HTTP client for every SDK client of this process: each waiting long-poll holds a slot.
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True,
                                              max_clients=spec.get("http_slots", http_slots))
    try:
        return await (scenarios or SCENARIOS)[spec["scenario"]](spec, http)
    finally:
        http.close()


def main(scenarios: Mapping[str, Scenario] | None = None, *, http_slots: int = 20000) -> int:
    """A load-generator process: the spec on the first line of stdin, the result as JSON on stdout."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    raise_nofile_limit()
    spec = json.loads(sys.stdin.readline())  # idle workers then read commands from the following lines
    result = eventloop.run(run(spec, scenarios, http_slots=http_slots))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
