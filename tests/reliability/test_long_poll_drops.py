"""Long-polls whose TCP connection drops mid-wait leave nothing behind on the node: the waiter gauge, the
connection gauges and the process's open file descriptors all come back to their baseline, long before
the polls' own timeout could have ended them.

Counted from outside, as an operator would: ``GET /metrics`` of a real node process and
``/proc/<pid>/fd``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from im.storage.embedded import EmbeddedMongo
from tests.cluster.conftest import StartNodes
from tests.cluster.procs import NodeProcess
from tests.reliability_report import record
from tests.test_metrics import metric

SECTION = "Dropped long-polls leave nothing behind (counted via /metrics and /proc/<pid>/fd)"
USERS = 20
POLLS_PER_USER = 10  # below the per-user connection cap (20): every poll is admitted and waits
ROUNDS = 3  # the first round warms the node up (store and Redis pools); the baseline is taken after it
# Far above the time this test allows for the node to notice a drop: a waiter that goes away by
# itself within the test proves the drop was noticed, not that the poll ran out.
POLL_WAIT_SECS = 60
SETTLE_TIMEOUT_SECS = 20.0
# PyMongo's default maxPoolSize: the driver's sockets to the store may grow up to it under concurrency.
STORE_POOL_MAX = 100


def fd_count(node: NodeProcess) -> int:
    assert node.process is not None
    return len(os.listdir(f"/proc/{node.process.pid}/fd"))


def _tcp_ports_by_inode() -> dict[str, tuple[int, int]]:
    """Socket inode -> (local port, remote port) of every TCP socket on this host (/proc/net/tcp)."""
    ports: dict[str, tuple[int, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                ports[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
    return ports


def fds_by_kind(node: NodeProcess, store_port: int) -> Counter[str]:
    """The node's open descriptors: ``clients`` (accepted connections on its HTTP port), ``store``
    (the driver's pool towards the store, which grows with concurrency up to its maximum and is not
    a leak) and ``other`` (everything else: listeners, Redis, logs, the event loop)."""
    assert node.process is not None
    ports = _tcp_ports_by_inode()
    kinds: Counter[str] = Counter()
    fd_dir = f"/proc/{node.process.pid}/fd"
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(FileNotFoundError):
            target = os.readlink(f"{fd_dir}/{fd}")
            inode = target[len("socket:["):-1] if target.startswith("socket:[") else ""
            local, remote = ports.get(inode, (0, 0))
            if local == node.port and remote != 0:
                kinds["clients"] += 1
            elif remote == store_port:
                kinds["store"] += 1
            else:
                kinds["other"] += 1
    return kinds


async def scrape(node: NodeProcess) -> dict[str, float]:
    response = await node.client.http.fetch(node.client.base_url + "/metrics")
    text = response.body.decode()
    return {
        "waiters": metric(text, "im_long_poll_waiters"),
        "longpoll": metric(text, 'im_connections{transport="longpoll"}'),
        "ws": metric(text, 'im_connections{transport="ws"}'),
    }


async def settle(node: NodeProcess, want: dict[str, float], done: Callable[[], bool] = lambda: True,
                 ) -> dict[str, float]:
    """Scrape until the gauges equal ``want`` and ``done()`` holds (or the time is up); return the last
    scrape, which the caller asserts on."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECS
    while True:
        seen = await scrape(node)
        if (seen == want and done()) or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.1)


async def open_poll(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"GET /api/v1/poll?after=0&timeout={POLL_WAIT_SECS} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    await writer.drain()
    return reader, writer


def drop(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    """Close the client side without a word: a FIN (the client process closed its socket) or, with
    ``reset``, an RST (SO_LINGER 0: a crashed client's kernel, or a NAT that forgot the flow)."""
    if reset:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


@pytest.mark.timeout(300)
async def test_dropped_long_polls_leave_no_waiter_behind(start_nodes: StartNodes, mongo: EmbeddedMongo) -> None:
    (node,) = start_nodes(1)
    store_port = urlsplit(mongo.url).port
    assert store_port
    tokens = [await node.client.user(f"p{i:02d}") for i in range(USERS)]
    idle = {"waiters": 0.0, "longpoll": 0.0, "ws": 0.0}
    polls = USERS * POLLS_PER_USER

    def fds() -> Counter[str]:
        return fds_by_kind(node, store_port)

    assert await settle(node, idle, lambda: fds()["clients"] == 0) == idle
    before = fds()
    assert before["clients"] == 0, before
    peak_fds = 0
    dropped = 0
    started = time.monotonic()
    for round_ in range(ROUNDS):
        conns = await asyncio.gather(*(open_poll(node.port, t) for t in tokens for _ in range(POLLS_PER_USER)))
        during = await settle(node, {"waiters": polls, "longpoll": polls, "ws": 0.0})
        assert during == {"waiters": polls, "longpoll": polls, "ws": 0.0}, during
        assert fds()["clients"] >= polls
        peak_fds = max(peak_fds, fd_count(node))
        for i, (_, writer) in enumerate(conns):
            drop(writer, reset=i % 2 == 1)
        # Polls dropped before they were even registered (a client that gives up at once): the
        # request arrives and the connection is already gone.
        quick = await asyncio.gather(*(open_poll(node.port, t) for t in tokens))
        for i, (_, writer) in enumerate(quick):
            drop(writer, reset=i % 2 == 0)
        dropped += len(conns) + len(quick)

        def back_to_baseline() -> bool:
            now = fds()
            return now["clients"] == 0 and now["other"] <= before["other"]

        after = await settle(node, idle, back_to_baseline)
        assert after == idle, f"round {round_}: {after}"
        now = fds()
        assert now["clients"] == 0 and now["other"] == before["other"], f"round {round_}: {now} vs {before}"
        assert now["store"] <= STORE_POOL_MAX, now
    settled_secs = time.monotonic() - started
    assert settled_secs < POLL_WAIT_SECS, "the waiters ended by timing out, not because the drop was seen"

    # Nothing stale swallows a wake-up: a fresh poll of a user whose polls were dropped gets a message.
    poll = asyncio.ensure_future(node.client.poll(tokens[0], after=0, timeout=30))
    await asyncio.sleep(0.5)
    assert (await node.client.send(tokens[1], "p00", "still here")).status == 201
    response = await asyncio.wait_for(poll, 20)
    assert [m["body"] for m in response.body["messages"]] == ["still here"]
    assert await settle(node, idle) == idle
    end = fds()
    record(SECTION, f"long-polls dropped mid-wait (FIN and RST), {ROUNDS} rounds of {polls}, one node", {
        "dropped": dropped, "waiters left": 0, "client sockets left": end["clients"],
        "fds before / peak / after": f"{sum(before.values())} / {peak_fds} / {sum(end.values())}",
        "store pool sockets after": end["store"], "seconds": round(settled_secs, 1),
    })
