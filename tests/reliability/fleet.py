"""A fleet of SDK clients (``imclient.Client``) spread over cluster nodes, sending to each other while a
fault is injected, and the ledger that checks the delivery promise afterwards.

The ledger counts, for every message acknowledged as ``sent``, its deliveries to the recipient and to
the sender's own inbox (what the sender's other devices read): each must be handed to ``on_message``
exactly once, with the seq the receipt named, and each inbox must be handed over in seq order with
every sender's messages in the order they were acknowledged. What the SDK drops as a duplicate (a
pull answered twice across a reconnect) is its job and is reported, not counted as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from imclient import Client, SendFailed
from tests.helpers import PASSWORD

__all__ = ["Fleet", "Ledger", "Member", "Sent"]

# Clients logging in at once: each login is one scrypt hash on a node (by design), and the machine
# has two cores shared by the nodes, the store and this process.
START_CONCURRENCY = 8
START_TIMEOUT_SECS = 60.0
# How long a send may take with its retries. An application keeps retrying a message until it is
# acknowledged; 90 s was once too short on this shared 2-core machine while another test run competed
# for the store (one send of 10,000 gave up), so the tests give up only far beyond any outage here.
SEND_DEADLINE_SECS = 300.0
DELIVERY_CHECK_INTERVAL_SECS = 0.25


@dataclass(frozen=True, slots=True)
class Sent:
    """One acknowledged send: the receipt's seqs are where the message must show up."""

    sender: str
    to: str
    client_msg_id: str
    seq: int
    sender_seq: int
    duplicate: bool

    @property
    def lane(self) -> str:
        """The sequence the message was sent in (``user.lane``): its order is defined within it."""
        return self.client_msg_id.rpartition("-")[0]


@dataclass
class Member:
    """One user with one SDK client; ``received`` is everything ``on_message`` handed over, in order."""

    user: str
    home: int
    transport: str
    client: Client | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    gaps: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def on_message(self, message: dict[str, Any]) -> None:
        self.received.append(message)
        self.arrived.set()

    def on_gap(self, reply: dict[str, Any]) -> None:
        self.gaps += 1


@dataclass
class Ledger:
    """What the run proved: every figure but ``acknowledged`` and the informational ones must be 0."""

    acknowledged: int = 0
    deliveries_checked: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    wrong_seq: int = 0
    gaps: int = 0
    unconfirmed: int = 0
    retried_as_duplicate: int = 0
    dropped_by_sdk: int = 0
    reconnects: int = 0

    @property
    def failures(self) -> dict[str, int]:
        """What must be 0. A send the SDK gave up on (``unconfirmed``: its deadline passed under
        overload and the sender was told so) is not an acknowledged message; it is bounded separately
        and checked for duplicates like the rest."""
        return {"lost": self.lost, "duplicated": self.duplicated, "reordered": self.reordered,
                "wrong_seq": self.wrong_seq, "gaps": self.gaps}


class Fleet:
    """``size`` users ``u00..``; user i lives on node ``i % len(urls)`` (its URL list starts there and
    goes round the others, so it fails over by itself) and uses WebSocket when i is even, long-poll
    when odd: every node carries both transports."""

    def __init__(self, urls: Sequence[str], size: int, *, seed: int = 7, **client_options: Any) -> None:
        self.urls = list(urls)
        self.client_options = client_options
        self.members = [
            Member(f"u{i:02d}", i % len(self.urls), "ws" if i % 2 == 0 else "longpoll") for i in range(size)
        ]
        self.sent: list[Sent] = []
        self.unconfirmed: list[str] = []
        self.seed = seed
        self._progress: list[tuple[int, asyncio.Event]] = []

    def urls_of(self, member: Member) -> list[str]:
        return self.urls[member.home:] + self.urls[:member.home]

    def on_node(self, home: int) -> list[Member]:
        return [m for m in self.members if m.home == home]

    async def start(self) -> None:
        gate = asyncio.Semaphore(START_CONCURRENCY)

        async def one(member: Member) -> None:
            async with gate:
                client = Client(self.urls_of(member), member.user, PASSWORD, register=True,
                                transport=member.transport, on_message=member.on_message,
                                on_gap=member.on_gap, **self.client_options)
                await client.start(timeout_secs=START_TIMEOUT_SECS)
                member.client = client

        await asyncio.gather(*(one(m) for m in self.members))

    async def close(self) -> None:
        await asyncio.gather(*(m.client.close() for m in self.members if m.client is not None),
                             return_exceptions=True)

    # -- load -----------------------------------------------------------------------------------------

    def reached(self, count: int) -> asyncio.Event:
        """An event set once ``count`` sends have been acknowledged (the moment to inject a fault)."""
        event = asyncio.Event()
        self._progress.append((count, event))
        self._signal()
        return event

    def _signal(self) -> None:
        for count, event in self._progress:
            if len(self.sent) >= count:
                event.set()

    async def send_all(self, per_member: int, *, lanes: int = 1) -> None:
        """Every member sends ``per_member`` messages, each to a random other member, over ``lanes``
        concurrent sequences (a chat app sending from several conversations at once).

        Within a lane one send is in flight at a time, so each lane's order is well defined (the order
        of its receipts) and checked at every recipient; several lanes per member keep more sends in
        flight, which fills the nodes' group commits (the store's cost is per transaction, not per
        message, so this is what raises the rate).
        """
        users = [m.user for m in self.members]

        async def lane(index: int, member: Member, lane: int, count: int) -> None:
            rand = random.Random(self.seed * 1_000_003 + index * 7919 + lane)
            others = [u for u in users if u != member.user]
            assert member.client is not None
            for n in range(count):
                to = rand.choice(others)
                cmid = f"{member.user}.{lane}-{n}"
                try:
                    receipt = await member.client.send(to, cmid, client_msg_id=cmid,
                                                       deadline_secs=SEND_DEADLINE_SECS)
                except SendFailed:
                    self.unconfirmed.append(cmid)
                    continue
                self.sent.append(Sent(member.user, to, cmid, receipt["seq"], receipt["sender_seq"],
                                      bool(receipt.get("duplicate"))))
                self._signal()

        shares = [per_member // lanes + (1 if k < per_member % lanes else 0) for k in range(lanes)]
        await asyncio.gather(*(lane(i, m, k, shares[k]) for i, m in enumerate(self.members)
                               for k in range(lanes)))

    # -- checking -------------------------------------------------------------------------------------

    def _expected(self) -> dict[str, set[str]]:
        expected: dict[str, set[str]] = {m.user: set() for m in self.members}
        for sent in self.sent:
            expected[sent.to].add(sent.client_msg_id)
            expected[sent.sender].add(sent.client_msg_id)
        return expected

    def missing(self) -> int:
        """Deliveries of acknowledged messages not handed over yet."""
        expected = self._expected()
        count = 0
        for member in self.members:
            have = {m.get("client_msg_id") for m in member.received if m.get("kind") != "receipt"}
            count += len(expected[member.user] - have)
        return count

    async def wait_delivered(self, timeout_secs: float) -> float:
        """Wait until every acknowledged message reached both inboxes (or the timeout); return the
        seconds it took. The ledger then tells what is missing, if anything."""
        started = time.monotonic()
        deadline = started + timeout_secs
        while self.missing() and time.monotonic() < deadline:
            for member in self.members:
                member.arrived.clear()
            waits = [asyncio.ensure_future(m.arrived.wait()) for m in self.members]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED),
                                       max(0.0, deadline - time.monotonic()))
            for wait in waits:
                wait.cancel()
            await asyncio.sleep(DELIVERY_CHECK_INTERVAL_SECS)  # let a burst land before counting again
        # Anything handed over twice would come now: give late duplicates a chance to show up.
        await asyncio.sleep(1.0)
        return time.monotonic() - started

    def ledger(self) -> Ledger:
        ledger = Ledger(acknowledged=len(self.sent), unconfirmed=len(self.unconfirmed))
        ledger.retried_as_duplicate = sum(1 for s in self.sent if s.duplicate)
        by_recipient: dict[str, list[tuple[Sent, int]]] = {m.user: [] for m in self.members}
        for sent in self.sent:  # (message, the seq it must carry in that inbox)
            by_recipient[sent.to].append((sent, sent.seq))
            by_recipient[sent.sender].append((sent, sent.sender_seq))
        for member in self.members:
            ledger.gaps += member.gaps
            if member.client is not None:
                ledger.dropped_by_sdk += member.client.duplicates_dropped
                ledger.reconnects += member.client.reconnects
            seqs = [m["seq"] for m in member.received]
            ledger.reordered += sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
            messages = [m for m in member.received if m.get("kind") != "receipt"]
            counts = Counter(m.get("client_msg_id") for m in messages)
            seq_of = {m.get("client_msg_id"): m["seq"] for m in messages}
            position = {m.get("client_msg_id"): i for i, m in enumerate(messages)}
            expected = by_recipient[member.user]
            ledger.deliveries_checked += len(expected)
            for sent, seq in expected:
                count = counts.get(sent.client_msg_id, 0)
                ledger.lost += count == 0
                ledger.duplicated += max(0, count - 1)
                ledger.wrong_seq += count > 0 and seq_of[sent.client_msg_id] != seq
            # A send the client gave up on may still have been stored: at most once, even so.
            ledger.duplicated += sum(max(0, counts.get(cmid, 0) - 1) for cmid in self.unconfirmed)
            # Per lane, the acknowledged order must be the order of arrival.
            for stream in {s.lane for s, _ in expected}:
                order = [position[s.client_msg_id] for s, _ in expected
                         if s.lane == stream and s.client_msg_id in position]
                ledger.reordered += sum(1 for a, b in itertools.pairwise(order) if b < a)
        return ledger

