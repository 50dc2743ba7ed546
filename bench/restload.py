"""The REST part's load (``bench/rest.py``): REST senders and SDK senders side by side, one set of
receivers, each round measured alone.

``python -m bench.restload`` reads a JSON spec on stdin and prints one JSON result line. One process
per receiver transport: it connects the receivers (SDK clients on WebSocket or long-poll: notify ->
pull -> ack; or, against the bare Tornado baseline, its WebSocket clients) and the SDK senders
(WebSocket), gives every REST sender one kept-alive connection (``bench/closedloop.py``'s
``RestSender``), sends one warm-up message per sender, then runs its rounds:

1. for each rate of ``rates``: the REST senders paced at that rate in all, then the SDK senders at the
   same rate (interleaved per rate, so the machine's drift falls on both alike);
2. ``messages`` per REST sender in closed loop (each send waits for the previous receipt);
3. with ``profile_secs``: a closed loop for that long, announced through ``profile_started_file`` so
   the orchestrator samples the server with py-spy while it runs (this round's figures are not the
   closed loop's: the sampler shares the cores).

Sender i sends to receiver i, REST and SDK alike. Paced: sender i of k sends the messages numbered i,
i + k, i + 2k ... of a schedule of ``rate`` messages/s in all, each at its time or, when its previous
receipt came back late, at once (one request at a time per connection: the offered rate drops rather
than the order; ``sent/s`` says what was really offered). Every round reports what ``round_result``
does (receipts, end-to-end latency, lost / duplicated / reordered, answers that were not receipts),
and around it: CPU seconds of the named processes, the store's command counters, the server's loop
turns (``bench/loopturns.py``).
"""

from __future__ import annotations

import asyncio
import functools
import random
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import tornado.httpclient

from bench import loadgen
from bench.closedloop import Books, Measure, RestSender, SendStats, make_body, round_result
from bench.loadgen import StoreCounters, close_all, freeze_heap, open_all
from bench.loopturns import LoopTurns
from bench.targets import ImTarget, make_target
from imclient.errors import ApiError

__all__ = ["SdkSender", "main"]

# The warm-up round (one message per sender) must be delivered within this time.
WARMUP_SECS = 60.0
# A paced send that leaves this much after its scheduled time counts as late (its sender was still
# waiting for the previous receipt).
LATE_SECS = 0.010
# Between rounds: the receivers' acks of the last deliveries reach the server before the next round
# is measured, so a round's CPU and store commands are its own.
SETTLE_SECS = 0.5
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


class Meter:
    """Around one round: CPU of the named processes (``closedloop.Measure``), the store's command
    counters by kind, and the server's loop turns; per acknowledged send where it is a cost."""

    def __init__(self, pids: Mapping[str, int], counters: StoreCounters, count_turns: bool) -> None:
        self._pids = dict(pids)
        self._counters = counters
        self._count_turns = count_turns and "server" in pids

    async def start(self) -> Meter:
        self._turns = LoopTurns(self._pids["server"]) if self._count_turns else None
        if self._turns is not None:
            await asyncio.to_thread(self._turns.start)  # perf needs a moment to attach
        self._ops = await self._counters.read()
        self._measure = await Measure(self._pids, None).start()
        return self

    async def finish(self, sends: int) -> dict[str, Any]:
        figures = await self._measure.finish()
        figures.pop("redis_calls", None)  # one node, no Redis
        turns = await asyncio.to_thread(self._turns.stop) if self._turns is not None else None
        ops_after = await self._counters.read()
        per = max(1, sends)
        figures["store_commands_per_send"] = {
            kind: (count - self._ops.get(kind, 0)) / per for kind, count in ops_after.items()
            if count - self._ops.get(kind, 0) > 0
        }
        figures["loop_turns"] = turns
        figures["loop_turns_per_send"] = turns / per if turns is not None else None
        if self._turns is not None and turns is None:
            figures["loop_turns_error"] = self._turns.error
        elif self._turns is None:
            figures["loop_turns_error"] = "not asked for"
        return figures


class Rounds:
    """The senders of one kind and their partners; builds that kind's paced and closed-loop rounds."""

    def __init__(self, senders: Sequence[Sender], partner: Mapping[str, str], pad_chars: int) -> None:
        self.senders = list(senders)
        self.partner = dict(partner)
        self.pad_chars = pad_chars

    async def _finish(self, books: Books, tag: str, stats: SendStats, acked: dict[str, list[int]],
                      drain_secs: float) -> dict[str, Any]:
        ledger = books.ledgers[tag]
        expected = sum(len(seqs) for seqs in acked.values())
        await ledger.wait(expected, drain_secs)
        lost = ledger.lost(acked, lambda sender: [self.partner[sender]])
        return round_result(ledger, stats, lost=lost, expected=expected)

    async def _send(self, sender: Sender, tag: str, seq: int, stats: SendStats,
                    acked: dict[str, list[int]]) -> None:
        body = make_body(tag, seq, self.pad_chars)
        if await sender.send({"to": self.partner[sender.user], "body": body}, f"{tag}-{sender.user}-{seq}",
                             stats):
            acked[sender.user].append(seq)

    async def paced(self, books: Books, tag: str, *, rate: float, secs: float,
                    drain_secs: float) -> dict[str, Any]:
        books.new(tag)
        stats, acked = SendStats(), {s.user: [] for s in self.senders}
        count = max(len(self.senders), round(rate * secs))
        late = 0
        last_start = started = time.monotonic()

        async def sender_loop(index: int, sender: Sender) -> None:
            nonlocal late, last_start
            for seq, slot in enumerate(range(index, count, len(self.senders))):
                delay = started + slot / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                late += delay < -LATE_SECS
                last_start = max(last_start, time.monotonic())
                await self._send(sender, tag, seq, stats, acked)

        await asyncio.gather(*(sender_loop(i, s) for i, s in enumerate(self.senders)))
        result = await self._finish(books, tag, stats, acked, drain_secs)
        # What was offered in fact: the schedule's messages over the time their sends took to start
        # (one schedule slot added, so a round on time reports its nominal rate).
        result.update({"rate": rate, "scheduled": count, "late_sends": late,
                       "sent_per_sec": count / max(1e-9, last_start - started + 1 / rate)})
        return result

    async def closed(self, books: Books, tag: str, *, messages: int | None = None, secs: float | None = None,
                     drain_secs: float, on_start: Callable[[], None] | None = None) -> dict[str, Any]:
        """Each sender sends its next message once the previous receipt came back: ``messages`` each,
        or as many as fit in ``secs``."""
        books.new(tag)
        stats, acked = SendStats(), {s.user: [] for s in self.senders}
        if on_start is not None:
            on_start()
        until = time.monotonic() + secs if secs is not None else None

        async def sender_loop(sender: Sender) -> None:
            seq = 0
            while (seq < messages) if messages is not None else (time.monotonic() < (until or 0)):
                await self._send(sender, tag, seq, stats, acked)
                seq += 1

        await asyncio.gather(*(sender_loop(s) for s in self.senders))
        return await self._finish(books, tag, stats, acked, drain_secs)


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

    async def measured(kind: str, run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        await asyncio.sleep(SETTLE_SECS)
        meter = await Meter(pids, counters, spec.get("count_turns", True)).start()
        result = await run()
        result.update(await meter.finish(result["acked"]))
        result["kind"] = kind
        return result

    result: dict[str, Any] = {"target": target, "transport": spec["receivers"][0].get("transport", "ws"),
                              "receivers": len(receivers), "rest_senders": len(rest_senders),
                              "sdk_senders": len(sdk_senders), "paced": []}
    try:
        warm = {kind: await rounds.closed(books, f"w{kind}", messages=1, drain_secs=WARMUP_SECS)
                for kind, rounds in kinds.items() if rounds.senders}
        for index, rate in enumerate(float(r) for r in spec.get("rates", [])):
            step: dict[str, Any] = {"rate": rate}
            for kind, rounds in kinds.items():
                if rounds.senders:
                    step[kind] = await measured(kind, functools.partial(
                        rounds.paced, books, f"p{index}{kind}", rate=rate, secs=spec["step_secs"],
                        drain_secs=drain))
            result["paced"].append(step)
        if spec.get("messages"):
            result["closed"] = await measured("rest", functools.partial(
                kinds["rest"].closed, books, "c", messages=spec["messages"], drain_secs=drain))
        if spec.get("profile_secs"):
            mark = Path(spec["profile_started_file"])
            result["profiled"] = await measured("rest", functools.partial(
                kinds["rest"].closed, books, "prof", secs=spec["profile_secs"] + 2 * PROFILE_MARGIN_SECS,
                drain_secs=drain, on_start=lambda: mark.write_text("started\n")))
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
