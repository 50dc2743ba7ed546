"""Long-poll: immediate return, wait-then-wake, timeout, ack through `after`, waiter cleanup."""

from __future__ import annotations

import asyncio
import socket
import time

from tests.helpers import Node, eventually, untrimmed_seqs


async def test_returns_at_once_when_inbox_has_newer(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    await node.send(alice, "bob", "waiting for you")
    started = time.monotonic()
    response = await node.poll(bob, after=0, timeout=20)
    assert time.monotonic() - started < 10
    assert [m["body"] for m in response.body["messages"]] == ["waiting for you"]


async def test_waits_and_wakes_on_notify(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    poll = asyncio.ensure_future(node.poll(bob, after=0, timeout=30))
    for _ in range(100):
        if node.service.hub.listener_count("bob"):
            break
        await asyncio.sleep(0.02)
    assert not poll.done()
    await node.send(alice, "bob", "wake up")
    response = await asyncio.wait_for(poll, 10)
    assert response.status == 200
    assert [m["body"] for m in response.body["messages"]] == ["wake up"]
    assert node.service.hub.listener_count("bob") == 0


async def test_timeout_returns_empty_list(node: Node) -> None:
    bob = await node.user("bob")
    started = time.monotonic()
    response = await node.poll(bob, after=0, timeout=1)
    assert time.monotonic() - started >= 0.9
    assert response.status == 200 and response.body["messages"] == [] and response.body["next"] == 0


async def test_after_acknowledges_and_trims(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    for i in range(3):
        await node.send(alice, "bob", f"m{i}")
    first = (await node.poll(bob, after=0, timeout=1)).body
    assert [m["seq"] for m in first["messages"]] == [1, 2, 3]
    await node.send(alice, "bob", "m3")
    second = (await node.poll(bob, after=first["next"], timeout=1)).body
    assert [m["body"] for m in second["messages"]] == ["m3"]
    # The poll's acknowledgement is written in the background (batched): the trim follows shortly.
    await eventually(lambda: untrimmed_seqs(node.service.store, "bob"), until=lambda kept: kept == [4],
                     what="entries 1..3 trimmed")
    # The archive keeps the 4 messages (plus the delivered receipt the trim sent alice).
    assert await node.service.store.messages.count_documents({"kind": {"$ne": "receipt"}}) == 4


async def test_timeout_is_bounded(node: Node) -> None:
    bob = await node.user("bob")
    for timeout in (61, -1, "x"):
        response = await node.request("GET", "/api/v1/poll", token=bob, query={"after": 0, "timeout": timeout})
        assert response.status == 400 and response.body["error"]["field"] == "timeout"


def _start_poll_and_hang_up(port: int, token: str) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET /api/v1/poll?after=0&timeout=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}"
                 "\r\n\r\n".encode())
    time.sleep(0.5)
    sock.close()


async def test_client_that_goes_away_leaves_no_waiter(node: Node) -> None:
    bob = await node.user("bob")
    task = asyncio.ensure_future(asyncio.to_thread(_start_poll_and_hang_up, node.port, bob))
    seen_waiting = False
    for _ in range(100):
        seen_waiting = seen_waiting or node.service.hub.listener_count("bob") == 1
        if task.done():
            break
        await asyncio.sleep(0.01)
    await task
    assert seen_waiting
    await eventually(lambda: node.service.hub.listener_count("bob") == 0, what="bob's waiter gone")
    assert node.service.hub.listener_count() == 0


async def test_cors_only_for_configured_origins(node: Node) -> None:
    bob = await node.user("bob")
    foreign = await node.request("GET", "/api/v1/poll", token=bob, query={"after": 0, "timeout": 0},
                                 headers={"Origin": "http://elsewhere.example"})
    assert "Access-Control-Allow-Origin" not in foreign.headers
