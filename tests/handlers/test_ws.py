"""WebSocket transport: notify, then pull, then ack; JSON and msgpack; bad frames; dead sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket

import msgpack
import pytest

from config import Settings
from im.models import Draft, direct_conversation_id
from tests.conftest import make_settings
from tests.helpers import Node, drain_inbox, eventually, untrimmed_seqs


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
async def test_send_notify_pull_ack(node: Node, binary: bool) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    async with node.ws(alice, binary=binary) as a, node.ws(bob, binary=binary) as b:
        sent = await a.send("bob", "hi over ws", client_msg_id="w-1")
        assert sent["t"] == "sent" and sent["seq"] == 1 and sent["client_msg_id"] == "w-1"
        assert await b.notify() == 1  # body-less: just the seq
        msgs = await b.pull(after=0)
        assert msgs["t"] == "msgs"
        assert [(m["seq"], m["body"], m["from"]) for m in msgs["messages"]] == [(1, "hi over ws", "alice")]
        acked = await b.ack(msgs["next"])
        assert acked["t"] == "acked" and acked["upto"] == 1 and acked["trimmed"] == 1
        assert await untrimmed_seqs(node.service.store, "bob") == []
        # The archive keeps the message (plus the delivered receipt the trim sent alice).
        assert await node.service.store.messages.count_documents({"kind": {"$ne": "receipt"}}) == 1
        # The sender's own socket hears about its message too (one timeline across its sessions).
        assert await a.notify() == 1


async def test_echo_off_socket_is_not_notified_of_its_own_sends(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    async with node.ws(alice, echo=False) as a, node.ws(alice) as other, node.ws(bob) as b:
        sent = await a.send("bob", "mine", client_msg_id="e-1")
        assert sent["sender_seq"] == 1
        # Everyone else hears of it: bob, and alice's other socket (echo on by default).
        assert await b.notify() == 1
        assert await other.notify() == 1
        # The sending socket does not: the first notify it gets is for bob's answer (seq 2).
        await b.send("alice", "yours")
        assert await a.notify() == 2
        assert a.notifies.empty()
        msgs = await a.pull(after=sent["sender_seq"])
        assert [(m["seq"], m["from"], m["body"]) for m in msgs["messages"]] == [(2, "bob", "yours")]


async def test_binary_replies_are_msgpack(node: Node) -> None:
    alice = await node.user("alice")
    async with node.ws(alice, binary=True) as a:
        await a.send_raw(msgpack.packb({"t": "ping", "rid": 9}))
        reply = await a.reply()
        assert reply == {"t": "pong", "rid": 9}


async def test_header_authentication(node: Node) -> None:
    alice = await node.user("alice")
    async with node.ws(alice, header_auth=True) as a:
        assert (await a.call({"t": "ping"}))["t"] == "pong"
        assert (await a.send("alice", "self"))["t"] == "sent"


async def test_bad_frames_get_errors_and_the_socket_stays_open(node: Node) -> None:
    alice, _ = await node.user("alice"), await node.user("bob")
    store = node.service.store
    async with node.ws(alice) as a:
        cases: list[tuple[str | bytes, str, str | None]] = [
            ("{not json", "bad_frame", None),
            (b"\xc1\xc1", "bad_frame", None),
            (json.dumps({"t": "launch"}), "unknown_type", "t"),
            (json.dumps({"t": "send", "body": "x", "client_msg_id": "1"}), "invalid", "to"),
            (json.dumps({"t": "send", "to": "bob", "body": ["x"], "client_msg_id": "1"}), "invalid", "body"),
            (json.dumps({"t": "send", "to": "nobody", "body": "x", "client_msg_id": "1"}), "unknown_recipient",
             "to"),
            (json.dumps({"t": "pull", "after": -1}), "invalid", "after"),
            (json.dumps({"t": "pull", "after": "soon"}), "invalid", "after"),
            (json.dumps({"t": "ack", "upto": 1.5}), "invalid", "upto"),
            (json.dumps({"t": "ack", "upto": 99}), "invalid", "upto"),
            (json.dumps({"t": "ping", "pad": "x" * (70 * 1024)}), "frame_too_large", None),
            (json.dumps({"t": "auth", "token": "again"}), "already_authenticated", None),
        ]
        for raw, code, field in cases:
            await a.send_raw(raw)
            reply = await a.reply()
            assert reply["t"] == "error" and reply["code"] == code, (raw[:60], reply)
            assert reply.get("field") == field, reply
            assert reply["message"]
        # Still healthy: a good frame works after all that, and nothing was stored by the bad ones.
        assert (await a.send("bob", "still here"))["t"] == "sent"
    assert await store.messages.count_documents({}) == 1


async def test_error_replies_echo_rid(node: Node) -> None:
    alice = await node.user("alice")
    async with node.ws(alice) as a:
        reply = await a.call({"t": "pull", "after": "x", "rid": "r-7"})
        assert reply["t"] == "error" and reply["rid"] == "r-7"
        unknown = await a.call({"t": "bogus", "rid": 3})
        assert unknown["code"] == "unknown_type" and unknown["rid"] == 3
        untyped = await a.call({"rid": "r-8"})
        assert untyped["code"] == "bad_frame" and untyped["rid"] == "r-8"
        blank = await a.call({"t": "send", "to": "alice", "body": "   ", "client_msg_id": "c1", "rid": 9})
        assert blank["code"] == "empty_body" and blank["rid"] == 9
        bad_rid = await a.call({"t": "bogus", "rid": [1]})
        assert bad_rid["code"] == "unknown_type" and "rid" not in bad_rid


async def test_frames_before_auth_are_refused_then_auth_works(node: Node) -> None:
    alice = await node.user("alice")
    async with node.ws() as a:
        refused = await a.call({"t": "pull", "after": 0})
        assert refused["code"] == "unauthenticated"
        bad = await a.call({"t": "auth", "token": "forged"})
        assert bad["code"] == "invalid_token"
        ok = await a.call({"t": "auth", "token": alice})
        assert ok == {"t": "auth", "ok": True, "user": "alice", "device": "default"}


async def test_unauthenticated_socket_is_closed_after_timeout(mongo, db_name, tmp_path) -> None:
    node = await Node.start(make_settings(mongo.url, db_name, tmp_path, ws_auth_timeout_secs=0.3))
    try:
        async with node.ws() as a:
            reply = await a.reply()
            assert reply["code"] == "auth_timeout"
            await asyncio.wait_for(a.closed.wait(), 5)
            assert a.conn.close_code == 4401
    finally:
        await node.stop()


async def test_foreign_origin_is_refused(node: Node) -> None:
    alice = await node.user("alice")
    with pytest.raises(Exception, match="403"):
        async with node.ws(alice, origin="http://evil.example"):
            pass
    async with node.ws(alice, origin=f"http://127.0.0.1:{node.port}") as a:
        assert (await a.call({"t": "ping"}))["t"] == "pong"


async def test_notifies_are_coalesced_not_queued(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    async with node.ws(bob) as b:
        await asyncio.gather(*(node.send(alice, "bob", f"m{i}") for i in range(20)))
        seen = [await b.notify()]
        while seen[-1] < 20:
            seen.append(await b.notify())
        assert seen == sorted(seen) and len(seen) <= 20
        messages, _ = await drain_inbox(node, bob)
        assert len(messages) == 20


def _raw_ws_handshake(port: int, token: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never answers a ping: a dead peer."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    assert b"101" in sock.recv(4096).split(b"\r\n")[0]
    return sock


async def test_dead_connection_is_closed_and_its_state_freed(mongo, db_name, tmp_path) -> None:
    settings: Settings = make_settings(mongo.url, db_name, tmp_path, ws_ping_interval_secs=0.3,
                                       ws_ping_timeout_secs=0.3)
    node = await Node.start(settings)
    try:
        token = await node.user("bob")
        sock = await asyncio.to_thread(_raw_ws_handshake, node.port, token)
        try:
            await eventually(lambda: node.service.hub.listener_count("bob") == 1, what="bob's socket listening")
            assert node.service.hub.listener_count("bob") == 1
            # Never pongs: dropped after the timeout + Tornado's 5 s close handshake.
            await eventually(lambda: node.service.hub.listener_count("bob") == 0, timeout_secs=20,
                             what="the dead socket dropped")
            assert node.service.hub.listener_count("bob") == 0
        finally:
            sock.close()
    finally:
        await node.stop()


async def test_a_slow_frame_does_not_hold_up_the_next_and_sends_keep_their_order(
        mongo, db_name, tmp_path) -> None:
    """Frames of one socket are served concurrently: an acknowledgement waiting for its batch (here a
    long linger) does not delay a pull sent after it, and pipelined sends are stored in frame order."""
    node = await Node.start(make_settings(mongo.url, db_name, tmp_path, ack_linger_secs=3.0))
    try:
        alice, bob = await node.user("alice"), await node.user("bob")
        async with node.ws(alice) as a, node.ws(bob) as b:
            for i in range(20):  # pipelined: no frame waits for the previous one's receipt
                await a.send_frame({"t": "send", "to": "bob", "body": f"m{i}", "client_msg_id": f"p{i}",
                                    "rid": i})
            sent = {r["rid"]: r for r in [await a.reply() for _ in range(20)]}
            assert [sent[i]["seq"] for i in range(20)] == list(range(1, 21))

            await b.send_frame({"t": "ack", "upto": 20, "rid": "ack"})
            await b.send_frame({"t": "pull", "after": 0, "limit": 50, "rid": "pull"})
            first = await b.reply(timeout=2)  # well before the ack's 3 s linger ends
            assert first["rid"] == "pull" and [m["body"] for m in first["messages"]] == [
                f"m{i}" for i in range(20)]
            acked = await b.reply(timeout=10)
            assert acked["rid"] == "ack" and acked["trimmed"] == 20
    finally:
        await node.stop()


async def test_sends_checked_in_the_store_and_in_memory_keep_their_frame_order(node: Node) -> None:
    """A send to a user the node knows is queued in the turn that read it; a group send waits for the
    store's membership check. Pipelined alternately, they are still stored in frame order (the
    sender's own inbox shows it), and each reply carries its rid."""
    alice, _, _ = await node.user("alice"), await node.user("bob"), await node.user("carol")
    created = await node.request("POST", "/api/v1/groups", token=alice,
                                 json_body={"name": "g", "members": ["bob", "carol"]})
    assert created.status == 201, created.body
    group = created.body["group"]
    async with node.ws(alice) as a:
        for i in range(12):
            target = {"group": group} if i % 2 else {"to": "bob"}
            await a.send_frame({"t": "send", **target, "body": f"m{i}", "client_msg_id": f"o{i}", "rid": i})
        sent = {r["rid"]: r for r in [await a.reply() for _ in range(12)]}
        assert sorted(sent) == list(range(12)) and all(r["t"] == "sent" for r in sent.values())
        own = [sent[i]["sender_seq"] for i in range(12)]
        assert own == sorted(own) and len(set(own)) == 12
        page = await a.pull(0)
        assert [m["body"] for m in page["messages"]] == [f"m{i}" for i in range(12)]


async def test_a_pull_served_from_memory_and_one_from_the_store_answer_alike(mongo, db_name, tmp_path) -> None:
    """With the inbox cache off every pull reads the store; with it on, a pull after a send is
    answered in the same turn. Both give the same page."""
    pages = []
    for entries in (0, 1000):
        node = await Node.start(make_settings(mongo.url, f"{db_name}_{entries}", tmp_path / str(entries),
                                              inbox_cache_entries=entries))
        try:
            alice, bob = await node.user("alice"), await node.user("bob")
            async with node.ws(alice) as a, node.ws(bob) as b:
                for i in range(3):
                    await a.send("bob", f"m{i}", client_msg_id=f"c{i}")
                page = await b.pull(1, limit=5)
                pages.append({k: page[k] for k in ("next", "head", "more")}
                             | {"bodies": [m["body"] for m in page["messages"]],
                                "seqs": [m["seq"] for m in page["messages"]]})
        finally:
            await node.stop()
    assert pages[0] == pages[1] == {"next": 3, "head": 3, "more": False, "bodies": ["m1", "m2"], "seqs": [2, 3]}


async def test_a_re_check_notifies_the_stored_head_so_the_client_pulls_what_it_missed(node: Node) -> None:
    """After notifies may have been lost (the hub's poke, e.g. after a Redis outage) a socket is told
    the inbox head read from the store, even when it notified that head's predecessor before: the
    client then pulls what was stored while it heard nothing."""
    alice, bob = await node.user("alice"), await node.user("bob")
    async with node.ws(bob) as b:
        await node.send(alice, "bob", "heard")
        assert await b.notify() == 1
        # Stored without a notify, as on another node while this one was not subscribed.
        await node.service.inboxes.append([Draft(sender="alice", to="bob", conv=direct_conversation_id("alice", "bob"),
                                                kind="text", body="missed", client_msg_id="quiet",
                                                recipients=("bob", "alice"))])
        node.service.hub.poke_all()
        assert await b.notify() == 2
        page = await b.pull(1)
        assert [m["body"] for m in page["messages"]] == ["missed"]
