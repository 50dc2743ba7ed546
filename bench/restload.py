"""The REST part's load (``bench/rest.py``): REST senders and SDK senders side by side, one set of
receivers, each round measured alone.

``python -m bench.restload`` reads a JSON spec on stdin and prints one JSON result line. One process
per receiver transport: it connects the receivers (SDK clients on WebSocket or long-poll: notify ->
pull -> ack; or, against the bare Tornado baseline, its WebSocket clients) and the SDK senders
(WebSocket), gives every REST sender one kept-alive connection (``bench/closedloop.py``'s
``RestSender``), sends one warm-up message per sender, then runs its rounds:

1. for each rate of ``rates``: the REST senders paced at that rate in all, and the SDK senders at the
   same rate, in slices of SLICE_SECS that alternate between the two (REST, SDK, SDK, REST ...) for
   ``step_secs`` of each, so the machine's drift and other work fall on both alike;
2. ``messages`` per REST sender in closed loop (each send waits for the previous receipt);
3. with ``profile_secs``: a closed loop for that long, announced through ``profile_started_file`` so
   the orchestrator samples the server with py-spy while it runs (this round's figures are not the
   closed loop's: the sampler shares the cores).

Sender i sends to receiver i, REST and SDK alike. Paced: sender i of k sends the messages numbered i,
i + k, i + 2k ... of a schedule of ``rate`` messages/s in all, each at its time or, when its previous
receipt came back late, at once (one request at a time per connection: the offered rate drops rather
than the order; ``sent/s`` says what was really offered). Each slice ends when what it acknowledged
was delivered. Every measurement reports what ``round_result`` does (receipts, end-to-end latency,
lost / duplicated / reordered, answers that were not receipts), and over its own windows
(``bench/costs.py``): CPU seconds of the named processes, the store's commands, the server's loop
turns (``bench/loopturns.py``).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import tornado.httpclient

from bench import loadgen
from bench.closedloop import Books, RestSender, SendStats, make_body, round_result
from bench.costs import Costs
from bench.loadgen import StoreCounters, close_all, freeze_heap, open_all
from bench.targets import ImTarget, make_target
from imclient.errors import ApiError

__all__ = ["SdkSender", "main"]

# The warm-up round (one message per sender) must be delivered within this time.
WARMUP_SECS = 60.0
# A paced send that leaves this much after its scheduled time counts as late (its sender was still
# waiting for the previous receipt).
LATE_SECS = 0.010
# Before each measurement: the receivers' acks of the last deliveries reach the server first, so a
# measurement's CPU and store commands are its own.
SETTLE_SECS = 0.5
# A paced rate alternates between the kinds of sender in slices this long (shorter: more of each
# slice is its start and its tail; longer: the machine's other work falls unevenly on the two).
SLICE_SECS = 1.0
# The idle reading (every client connected, nothing sent) lasts this long.
IDLE_SECS = 1.0
# The py-spy window starts this long after the profiled round does, and the round outlasts the
# window by as much again (the orchestrator samples ``profile_secs``).
PROFILE_MARGIN_SECS = 1.0
SEND_DEADLINE_SECS = 60.0


class Sender(Protocol):
    user: str

    async def send(self, fields: Mapping[str, Any], client_msg_id: str, stats: SendStats) -> bool: ...

    def close(self) -> None: ...


class SdkSender:
    """One SDK client sending over its WebSocket (``Client.send``: returns on the server's ``sent``
    frame, the receipt), recorded in the same ``SendStats`` as a REST sender's."""

    def __init__(self, target: ImTarget) -> None:
        self.user = target.user
        self._client = target.client

    async def send(self, fields: Mapping[str, Any], client_msg_id: str, stats: SendStats) -> bool:
        started = time.monotonic()
        stats.first_send_ns = stats.first_send_ns or time.monotonic_ns()
        stats.attempts += 1  # the SDK's own retries are inside this one call
        try:
            await self._client.send(fields["to"], fields["body"], client_msg_id=client_msg_id,
                                    deadline_secs=SEND_DEADLINE_SECS)
        except ApiError as error:
            stats.not_2xx[str(error.status)] += 1
            stats.codes[f"{error.status} {error.code}"] += 1
            stats.abandoned += 1
            return False
        except Exception as error:
            stats.not_2xx[type(error).__name__] += 1
            stats.abandoned += 1
            return False
        stats.receipt_ms.append((time.monotonic() - started) * 1000)
        stats.acked += 1
        stats.last_receipt_ns = max(stats.last_receipt_ns, time.monotonic_ns())
        return True

    def close(self) -> None:
        return None  # its target is closed with the receivers


class Run:
    """One kind's messages of one measurement (a paced rate, or a closed loop), which may be sent in
    several slices: its ledger, its sends, its costs, and the time its slices were active."""

    def __init__(self, books: Books, tag: str, senders: Sequence[Sender], costs: Costs) -> None:
        self.tag = tag
        self.ledger = books.new(tag)
        self.stats = SendStats()
        self.acked: dict[str, list[int]] = {s.user: [] for s in senders}
        self.next_seq: Counter[str] = Counter()  # per sender: its seqs run on across slices
        self.costs = costs
        self.active_secs = 0.0
        self.scheduled = 0
        self.late = 0
        self.sending_secs = 0.0

    @property
    def expected(self) -> int:
        return sum(len(seqs) for seqs in self.acked.values())


class Rounds:
    """The senders of one kind and their partners: sends that kind's slices and closed loops."""

    def __init__(self, senders: Sequence[Sender], partner: Mapping[str, str], pad_chars: int) -> None:
        self.senders = list(senders)
        self.partner = dict(partner)
        self.pad_chars = pad_chars

    async def _send(self, run: Run, sender: Sender) -> None:
        seq = run.next_seq[sender.user]
        run.next_seq[sender.user] += 1
        body = make_body(run.tag, seq, self.pad_chars)
        if await sender.send({"to": self.partner[sender.user], "body": body},
                             f"{run.tag}-{sender.user}-{seq}", run.stats):
            run.acked[sender.user].append(seq)

    async def _window(self, run: Run, send: Callable[[], Awaitable[None]], drain_secs: float) -> None:
        """One window of ``run``: its costs counted, its sends, then until what they acknowledged was
        delivered (so the next window, maybe another kind's, pays nothing of this one's)."""
        await run.costs.resume()
        started = time.monotonic()
        try:
            await send()
            await run.ledger.wait(run.expected, drain_secs)
        finally:
            run.active_secs += time.monotonic() - started
            await run.costs.pause()

    async def paced_slice(self, run: Run, *, rate: float, secs: float, drain_secs: float) -> None:
        """``rate`` messages/s in all for ``secs``: sender i of k sends slots i, i + k ... of the
        schedule, each at its time or, when its previous receipt came back late, at once."""
        count = max(len(self.senders), round(rate * secs))
        started = last_start = 0.0  # set when the window opens

        async def sender_loop(index: int, sender: Sender) -> None:
            nonlocal last_start
            for slot in range(index, count, len(self.senders)):
                delay = started + slot / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                run.late += delay < -LATE_SECS
                last_start = max(last_start, time.monotonic())
                await self._send(run, sender)

        async def send() -> None:
            nonlocal started, last_start
            started = last_start = time.monotonic()
            await asyncio.gather(*(sender_loop(i, s) for i, s in enumerate(self.senders)))

        await self._window(run, send, drain_secs)
        run.scheduled += count
        # The time the schedule's sends took to start, one slot added (a slice on time spans secs).
        run.sending_secs += last_start - started + 1 / rate

    async def closed(self, run: Run, *, messages: int | None = None, secs: float | None = None,
                     drain_secs: float, on_start: Callable[[], None] | None = None) -> None:
        """Each sender sends its next message once the previous receipt came back: ``messages`` each,
        or as many as fit in ``secs``."""

        async def sender_loop(sender: Sender, until: float) -> None:
            sent = 0
            while sent < messages if messages is not None else time.monotonic() < until:
                await self._send(run, sender)
                sent += 1

        async def send() -> None:
            if on_start is not None:
                on_start()
            until = time.monotonic() + (secs or 0.0)
            await asyncio.gather(*(sender_loop(s, until) for s in self.senders))

        await self._window(run, send, drain_secs)

    def result(self, run: Run, kind: str) -> dict[str, Any]:
        lost = run.ledger.lost(run.acked, lambda sender: [self.partner[sender]])
        result = round_result(run.ledger, run.stats, lost=lost, expected=run.expected)
        result.update(run.costs.per_send(run.stats.acked))
        result["kind"] = kind
        return result


def paced_result(rounds: Rounds, run: Run, kind: str, rate: float) -> dict[str, Any]:
    """A paced run's figures: its rate over its own active time (its slices alternated with another
    kind's, so the span from first send to last delivery would halve it)."""
    result = rounds.result(run, kind)
    result.update({
        "rate": rate,
        "scheduled": run.scheduled,
        "late_sends": run.late,
        "sent_per_sec": run.scheduled / max(1e-9, run.sending_secs),
        "secs": run.active_secs,
        "delivered_per_sec": result["delivered"] / max(1e-9, run.active_secs),
    })
    return result


async def rest(spec: dict[str, Any], http: tornado.httpclient.AsyncHTTPClient) -> dict[str, Any]:
    books = Books()
    target, url = spec.get("target", "im"), spec["url"]
    receivers = [make_target(target, url, c, on_message=books.receiver(c["user"]), http=http)
                 for c in spec["receivers"]]
    sdk_targets = [make_target("im", url, {**c, "transport": "ws"}, on_message=books.receiver(c["user"]),
                               http=http) for c in spec.get("sdk_senders", [])]
    rand = random.Random(spec.get("seed", 1))
    rest_senders = [RestSender(url, c["user"], c["token"], deadline_secs=SEND_DEADLINE_SECS, rand=rand)
                    for c in spec["rest_senders"]]
    sdk_senders = [SdkSender(t) for t in sdk_targets if isinstance(t, ImTarget)]
    names = [r.user for r in receivers]
    pad_chars = spec.get("pad_chars", 48)
    # Sender i of either kind sends to receiver i (there are at least as many receivers as senders).
    kinds = {
        kind: Rounds(senders, {s.user: names[i] for i, s in enumerate(senders)}, pad_chars)
        for kind, senders in (("rest", rest_senders), ("sdk", sdk_senders))
    }
    connect_started = time.monotonic()
    errors = await open_all([*receivers, *sdk_targets])
    connect_secs = time.monotonic() - connect_started
    freeze_heap()
    counters = StoreCounters(spec.get("store_url"))
    pids, drain = spec.get("pids", {}), spec["drain_secs"]
    active = {kind: rounds for kind, rounds in kinds.items() if rounds.senders}

    async def costs() -> Costs:
        return await Costs(pids, counters, count_turns=spec.get("count_turns", True)).open()

    async def paced(rate: float, index: int) -> dict[str, Any]:
        """Both kinds at ``rate``, in slices of SLICE_SECS that alternate (ABBA...), so noise from the
        machine's other work falls on both alike."""
        runs = {kind: Run(books, f"p{index}{kind}", rounds.senders, await costs())
                for kind, rounds in active.items()}
        slices = max(1, round(spec["step_secs"] / SLICE_SECS))
        try:
            await asyncio.sleep(SETTLE_SECS)
            for number in range(slices):
                order = list(active.items()) if number % 2 == 0 else list(reversed(active.items()))
                for kind, rounds in order:
                    await rounds.paced_slice(runs[kind], rate=rate, secs=spec["step_secs"] / slices,
                                             drain_secs=drain)
        finally:
            for run in runs.values():
                await run.costs.close()
        return {"rate": rate, **{kind: paced_result(active[kind], run, kind, rate)
                                 for kind, run in runs.items()}}

    async def idle() -> dict[str, Any]:
        """The server with every client connected and nothing sent: its own pace (timers, pings),
        which is in every round's loop turns and CPU too."""
        meter = await costs()
        try:
            await asyncio.sleep(SETTLE_SECS)
            await meter.resume()
            await asyncio.sleep(IDLE_SECS)
            await meter.pause()
        finally:
            await meter.close()
        turns, secs = meter.loop_turns, max(1e-9, meter.wall_secs)
        return {"secs": secs, "cpu_secs": dict(meter.cpu_secs), "store_commands": dict(meter.store_commands),
                "loop_turns_per_sec": turns / secs if turns is not None else None,
                "loop_turns_error": meter.per_send(0).get("loop_turns_error", "")}

    async def closed(tag: str, **how: Any) -> dict[str, Any]:
        run = Run(books, tag, kinds["rest"].senders, await costs())
        try:
            await asyncio.sleep(SETTLE_SECS)
            await kinds["rest"].closed(run, drain_secs=drain, **how)
        finally:
            await run.costs.close()
        return kinds["rest"].result(run, "rest")

    result: dict[str, Any] = {"target": target, "transport": spec["receivers"][0].get("transport", "ws"),
                              "receivers": len(receivers), "rest_senders": len(rest_senders),
                              "sdk_senders": len(sdk_senders), "paced": []}
    warm: dict[str, dict[str, Any]] = {}
    try:
        for kind, rounds in active.items():
            run = Run(books, f"w{kind}", rounds.senders, Costs({}, counters, count_turns=False))
            await rounds.closed(run, messages=1, drain_secs=WARMUP_SECS)
            warm[kind] = rounds.result(run, kind)
        result["idle"] = await idle()
        for index, rate in enumerate(float(r) for r in spec.get("rates", [])):
            result["paced"].append(await paced(rate, index))
        if spec.get("messages"):
            result["closed"] = await closed("c", messages=spec["messages"])
        if spec.get("profile_secs"):
            mark = Path(spec["profile_started_file"])
            result["profiled"] = await closed("prof", secs=spec["profile_secs"] + 2 * PROFILE_MARGIN_SECS,
                                              on_start=lambda: mark.write_text("started\n"))
    finally:
        for sender in rest_senders:
            sender.close()
        reconnects = sum(t.client.reconnects for t in [*receivers, *sdk_targets] if isinstance(t, ImTarget))
        await counters.close()
        await close_all([*receivers, *sdk_targets])
    result.update({
        "warmup": {kind: {f: w[f] for f in ("expected", "delivered", "lost", "non_2xx")}
                   for kind, w in warm.items()},
        "connect_secs": connect_secs,
        "connect_error_count": len(errors),
        "connect_errors": errors[:5],
        "reconnects": reconnects,
        "foreign": books.foreign,
    })
    return result


SCENARIOS = {"rest": rest}


def main() -> int:
    return loadgen.main(SCENARIOS, http_slots=2000)


if __name__ == "__main__":
    sys.exit(main())
