"""Long-poll: immediate return, wait-then-wake, timeout, ack through `after`, waiter cleanup."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from pathlib import Path

import pytest

from handlers.longpoll import ParkedPolls, PollHandler, peer_gone
from im.storage.embedded import EmbeddedMongo
from tests.conftest import make_settings
from tests.helpers import Node, eventually, running_node, untrimmed_seqs


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


def _parked_polls(node: Node) -> ParkedPolls:
    app = node.server.request_callback
    for rule in app.wildcard_router.rules:  # type: ignore[attr-defined]
        if rule.target is PollHandler:
            return rule.target_kwargs["parked"]
    raise AssertionError("no long-poll route")


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed client's kernel or a NAT that forgot the flow."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_client_gone_without_a_close_report_is_found_by_the_probe(
        mongo: EmbeddedMongo, db_name: str, tmp_path: Path, how: str) -> None:
    """A close the event loop never reports (simulated: tornado's close callback is detached) still ends
    the wait within the probe interval, not at the poll's 30 s timeout."""
    settings = make_settings(mongo.url, db_name, tmp_path, long_poll_probe_secs=0.2)
    async with running_node(settings) as node:
        bob = await node.user("bob")
        parked = _parked_polls(node)
        sock = socket.create_connection(("127.0.0.1", node.port))
        sock.sendall(f"GET /api/v1/poll?after=0&timeout=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bob}"
                     "\r\n\r\n".encode())
        await eventually(lambda: len(parked) == 1 and node.service.hub.listener_count("bob") == 1,
                         what="bob's poll parked")
        (poll,) = parked
        assert not poll.client_gone_unreported()  # alive: the probe leaves it alone
        poll.request.connection.set_close_callback(None)
        if how == "rst":
            _reset(sock)
        else:
            sock.close()
        await eventually(lambda: node.service.hub.listener_count("bob") == 0, timeout_secs=5,
                         what="bob's waiter ended by the probe")
        assert len(parked) == 0 and parked.found_gone == 1
        # The node still serves bob: a fresh poll gets a message sent to him.
        alice = await node.user("alice")
        poll_again = asyncio.ensure_future(node.poll(bob, after=0, timeout=20))
        await eventually(lambda: len(parked) == 1, what="the fresh poll parked")
        await node.send(alice, "bob", "after the probe")
        response = await asyncio.wait_for(poll_again, 10)
        assert [m["body"] for m in response.body["messages"]] == ["after the probe"]
        assert parked.found_gone == 1


def test_peer_gone_tells_closed_and_reset_sockets_from_live_ones() -> None:
    live, peer = socket.socketpair()
    with live, peer:
        assert not peer_gone(live)
        peer.sendall(b"GET")  # data waiting (a pipelined request) is a live client, and is not consumed
        assert not peer_gone(live)
        assert live.recv(3) == b"GET"
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        for close in (socket.socket.close, _reset):
            client = socket.create_connection(listener.getsockname())
            server_side, _ = listener.accept()
            with server_side:
                assert not peer_gone(server_side)
                close(client)
                deadline = time.monotonic() + 5
                while not peer_gone(server_side) and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert peer_gone(server_side), close
    assert peer_gone(None)
