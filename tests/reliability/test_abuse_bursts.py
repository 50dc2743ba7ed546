"""Abuse at the door: bursts of registrations and wrong logins against one node with its default
limits, while other users send messages steadily.

The node is the production entry point (``python server.py`` with its embedded store) and nothing is
configured but where its data goes, so the limits are the defaults an operator gets. The attacker
comes from one loopback address (the other users each from an address of their own, as on the
internet); a last burst comes from many addresses at once, which per-address limits cannot stop and
only the bounded password hashing keeps away from message traffic. What is recorded: how each burst
was answered, and the other users' send latency during it against the quiet stretch just before it.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from im.storage.embedded import free_port
from tests.cluster.procs import NodeProcess
from tests.reliability.loopback_client import (
    NO_ANSWER,
    Burst,
    LoopbackClient,
    SenderProcess,
    SendSample,
    fire_burst,
)
from tests.reliability_report import record

SECTION = "Abuse at the door: registration and login bursts against one node with default limits"
PASSWORD = "steady user password"
ATTACKER_IP = "127.0.0.1"
OTHER_USERS = 4
OTHER_USER_SENDS_PER_SEC = 8.0  # under the default per-user send rate (10/s)
# Sends are compared in the stretch just before each burst and during it, so that both see the same
# background (a shared machine's load drifts); it is longer than the per-address request bucket takes
# to refill after the burst before.
QUIET_SECS = 8.0
REGISTRATIONS, REGISTRATIONS_PER_SEC = 200, 40.0
LOGINS, LOGINS_PER_SEC = 400, 80.0
SPREAD_ADDRESSES = 40
# Generous on purpose (a shared 2-core machine): the 2x goal and the figures are in docs/reliability.md.
P99_BOUND_FACTOR, P99_BOUND_FLOOR_SECS = 4.0, 1.0


def node_env(data_dir: Path) -> dict[str, str]:
    """The environment of a node run with every default but where its data lives."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IM_")}
    env.update({"IM_DATA_DIR": str(data_dir), "IM_LOG_LEVEL": "WARNING"})
    return env


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def send_seconds(samples: list[SendSample], since: float, until: float) -> list[float]:
    """How long each of the other users' sends that went out in ``[since, until]`` took."""
    seconds = [s.seconds for s in samples if since <= s.started <= until]
    assert seconds, "no send of the other users fell in this stretch"
    return seconds


def latency_text(seconds: list[float]) -> str:
    return " / ".join(f"{percentile(seconds, q) * 1000:.0f}" for q in (50, 99, 100))


@dataclass(frozen=True)
class Stretch:
    """A burst, and the quiet stretch just before it."""

    quiet_from: float
    burst: Burst

    def figures(self, samples: list[SendSample]) -> dict[str, Any]:
        quiet = send_seconds(samples, self.quiet_from, self.burst.started)
        during = send_seconds(samples, self.burst.started, self.burst.ended)
        statuses = [a.status for a in self.burst.answers]
        return {
            "201": statuses.count(201), "401 (password checked)": statuses.count(401), "429": statuses.count(429),
            "other status": sum(1 for s in statuses if s not in (201, 401, 429, NO_ANSWER)),
            "no answer": statuses.count(NO_ANSWER), "burst s": round(self.burst.ended - self.burst.started, 1),
            "sends without / during": f"{len(quiet)} / {len(during)}",
            "send p50 / p99 / max ms, without": latency_text(quiet),
            "send p50 / p99 / max ms, during": latency_text(during),
        }

    def p99s(self, samples: list[SendSample]) -> tuple[float, float]:
        return (percentile(send_seconds(samples, self.quiet_from, self.burst.started), 99),
                percentile(send_seconds(samples, self.burst.started, self.burst.ended), 99))


def assert_refusals_are_well_formed(burst: Burst) -> None:
    """Every 429 says when to come back and carries the API's JSON error; no request went unanswered."""
    assert burst.count(NO_ANSWER) == 0, "a connection was dropped instead of answered"
    for answer in burst.answers:
        if answer.status == 429:
            assert int(answer.headers["Retry-After"]) >= 1, answer
            assert set(answer.body["error"]) >= {"code", "message"}, answer


def drain(client: LoopbackClient, token: str) -> set[str]:
    """Every client_msg_id in the recipient's inbox."""
    seen: set[str] = set()
    after = 0
    while True:
        page = client.call("GET", f"/api/v1/inbox?after={after}&limit=500", token=token)
        assert page.status == 200, page
        seen.update(m["client_msg_id"] for m in page.body["messages"])
        after = page.body["next"]
        if not page.body["more"]:
            return seen


async def quiet_then(port: int, requests: list[tuple[str, dict[str, Any], str]], per_sec: float) -> Stretch:
    quiet_from = time.monotonic()
    await asyncio.sleep(QUIET_SECS)
    return Stretch(quiet_from, await fire_burst(port, requests, per_sec=per_sec))


@pytest.mark.timeout(600)
async def test_bursts_at_the_door_are_refused_early_and_do_not_delay_messages(tmp_path: Path) -> None:
    node = NodeProcess("door", free_port(), node_env(tmp_path / "data"), tmp_path / "logs").start()
    recipient = LoopbackClient(node.port, "127.0.2.1")
    senders: SenderProcess | None = None
    try:
        recipient_token = await asyncio.to_thread(recipient.user, "recipient", PASSWORD)
        users = []
        for i in range(OTHER_USERS):
            source_ip = f"127.0.1.{i + 1}"
            client = LoopbackClient(node.port, source_ip)
            users.append((source_ip, await asyncio.to_thread(client.user, f"steady{i}", PASSWORD)))
            client.close()
        senders = SenderProcess(node.port, users, "recipient", per_sec=OTHER_USER_SENDS_PER_SEC).start()
        await asyncio.sleep(2.0)  # warm-up: the senders run, their conversations and keys exist
        registrations = await quiet_then(node.port, [
            ("/api/v1/users", {"user": f"burst{i}", "password": "burst password"}, ATTACKER_IP)
            for i in range(REGISTRATIONS)], REGISTRATIONS_PER_SEC)
        logins = await quiet_then(node.port, [
            ("/api/v1/tokens", {"user": f"nobody{i}", "password": "wrong password"}, ATTACKER_IP)
            for i in range(LOGINS)], LOGINS_PER_SEC)
        spread_logins = await quiet_then(node.port, [
            ("/api/v1/tokens", {"user": f"someone{i}", "password": "wrong password"},
             f"127.0.3.{i % SPREAD_ADDRESSES + 1}") for i in range(LOGINS)], LOGINS_PER_SEC)
        await asyncio.sleep(1.0)
        samples = await asyncio.to_thread(senders.stop)
        senders = None
        delivered = await asyncio.to_thread(drain, recipient, recipient_token)
    finally:
        try:
            if senders is not None:
                await asyncio.to_thread(senders.stop)
        finally:
            recipient.close()
            node.stop()

    rows = {
        f"{REGISTRATIONS} registrations from one address, offered at {REGISTRATIONS_PER_SEC:g}/s": registrations,
        f"{LOGINS} wrong logins (unknown users) from one address, offered at {LOGINS_PER_SEC:g}/s": logins,
        f"{LOGINS} wrong logins (unknown users) from {SPREAD_ADDRESSES} addresses, offered at {LOGINS_PER_SEC:g}/s":
            spread_logins,
    }
    for name, stretch in rows.items():
        figures = stretch.figures(samples)
        record(SECTION, f"{name}; {OTHER_USERS} other users send {OTHER_USER_SENDS_PER_SEC:g} msg/s each", figures)
        print(name, figures)

    # Every send of the other users was accepted and delivered; none of their connections dropped.
    assert {s.status for s in samples} == {201}, sorted({s.status for s in samples})
    assert {s.client_msg_id for s in samples} <= delivered
    for stretch in rows.values():
        assert_refusals_are_well_formed(stretch.burst)
    # From one address, the bursts are mostly refused before any password is hashed.
    assert registrations.burst.count(429) >= 0.9 * REGISTRATIONS and registrations.burst.count(201) <= 10
    assert logins.burst.count(429) >= 0.9 * LOGINS and logins.burst.count(401) <= 20
    # From many addresses, what the bounded hashing cannot take is refused, never queued without end.
    assert spread_logins.burst.count(401) + spread_logins.burst.count(429) == LOGINS
    for stretch in rows.values():
        without, during = stretch.p99s(samples)
        assert during <= max(P99_BOUND_FACTOR * without, P99_BOUND_FLOOR_SECS), (during, without)
