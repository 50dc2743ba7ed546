"""The SDK against a real node: delivery in order and once, transport fallback, reconnects, retries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from config import Settings
from im.storage.embedded import free_port
from imclient import ApiError, Client, SendFailed
from tests.helpers import PASSWORD, Node
from tests.imclient.support import Inbox, ReplyDroppingProxy


@contextlib.asynccontextmanager
async def client(urls: Any, user: str, inbox: Inbox | None = None, **options: Any) -> AsyncIterator[Client]:
    sdk = Client(urls, user, PASSWORD, on_message=inbox, on_gap=inbox.on_gap if inbox else None,
                 register=True, **options)
    await sdk.start(timeout_secs=20)
    try:
        yield sdk
    finally:
        await sdk.close()


async def stop_node(node: Node) -> None:
    """Stop ``node`` as a dying process would: its WebSockets close too.

    ``Node.stop()`` alone closes HTTP connections but not WebSockets (Tornado detaches them from the
    HTTP server), so the sockets would stay open to a runtime whose store is closed.
    """
    hub = node.service.hub
    for user in hub.local_users():
        for listener in list(hub.table.connections.get(user, ())):
            close = getattr(listener, "close", None)
            if close is not None:
                close(1001, "going away")
    await node.stop()


def assert_in_seq_order_once(inbox: Inbox) -> None:
    seqs = [m["seq"] for m in inbox.messages]
    assert seqs == sorted(set(seqs)), seqs


@pytest.mark.parametrize("transport", ["ws", "longpoll"])
async def test_messages_arrive_in_order_and_once(node: Node, transport: str) -> None:
    got = Inbox()
    async with client(node.base_url, "bob", got, transport=transport) as bob, \
            client(node.base_url, "alice", transport=transport) as alice:
        assert bob.connected_via == transport
        sent = [f"m{i}" for i in range(25)]
        # Concurrent sends: order is the order the server stored them, which the receipts tell.
        receipts = await asyncio.gather(*(alice.send("bob", body) for body in sent))
        by_seq = [r["client_msg_id"] for r in sorted(receipts, key=lambda r: r["seq"])]
        await got.wait_for(25, sender="alice")
        await asyncio.sleep(0.3)  # anything extra (a duplicate) would show up now
        assert [m["client_msg_id"] for m in got.messages] == by_seq
        assert sorted(got.bodies()) == sorted(sent)
        assert_in_seq_order_once(got)
        assert bob.last_seq == max(r["seq"] for r in receipts)


async def test_own_messages_come_back_through_the_senders_inbox(node: Node) -> None:
    mine = Inbox()
    async with client(node.base_url, "bob"), client(node.base_url, "alice", mine) as alice:
        receipt = await alice.send("bob", "hello")
        await mine.wait_for(1)
        assert mine.messages[0]["seq"] == receipt["sender_seq"]


async def test_own_sends_on_a_websocket_are_taken_from_their_receipts_not_pulled(node: Node) -> None:
    sender_copy, other_device = Inbox(), Inbox()
    await node.user("bob")  # offline: no acks, so no delivered receipts land in alice's inbox
    async with client(node.base_url, "alice", sender_copy, transport="ws") as alice, \
            client(node.base_url, "alice", other_device, transport="ws", device="tablet"):
        delivered_before = node.service.metrics.messages_delivered._value.get()
        receipts = [await alice.send("bob", f"m{i}") for i in range(5)]
        await other_device.wait_for(5)
        await asyncio.sleep(0.3)  # a pull by the sending device would show up now
        # The sending device has its entries, identical to what the other device pulled, in order, once.
        assert sender_copy.messages == other_device.messages
        assert [m["seq"] for m in sender_copy.messages] == [r["sender_seq"] for r in receipts]
        assert alice.last_seq == receipts[-1]["sender_seq"]
        # Only the other device pulled them.
        assert node.service.metrics.messages_delivered._value.get() - delivered_before == 5


async def test_a_reply_sent_from_inside_on_message_arrives_in_order(node: Node) -> None:
    """The SDK delivers one entry at a time; a send from the callback must not wait on that delivery."""
    alice: Client | None = None
    seen = Inbox()

    async def echo_bot(message: dict[str, Any]) -> None:
        seen(message)
        if message["from"] == "bob":
            assert alice is not None
            await alice.send("bob", f"re: {message['body']}")

    got = Inbox()
    async with client(node.base_url, "bob", got, transport="ws") as bob, \
            client(node.base_url, "alice", transport="ws") as alice_client:
        alice = alice_client
        alice.on_message = echo_bot
        for i in range(3):  # one at a time: each reply's seq directly follows the question's
            await bob.send("alice", f"q{i}")
            await got.wait_for(i + 1, sender="alice", timeout=10)
        assert got.bodies("alice") == ["re: q0", "re: q1", "re: q2"]
        await seen.wait_for(3, sender="alice")
        assert_in_seq_order_once(seen)
        assert seen.bodies("bob") == ["q0", "q1", "q2"]


async def test_own_receipt_that_does_not_follow_the_last_seq_wakes_a_pull() -> None:
    got = Inbox()
    sdk = Client("http://127.0.0.1:9", "alice", PASSWORD, on_message=got, after=3)
    receipt = {"msg_id": "m", "client_msg_id": "c", "conv": "d:alice:bob", "to": "bob", "ts": 1,
               "duplicate": False}
    await sdk._own_sent({**receipt, "sender_seq": 5}, {"to": "bob", "body": "x"})
    assert got.messages == [] and sdk.last_seq == 3 and sdk._wake.is_set()  # seq 4 is someone else's
    sdk._wake.clear()
    await sdk._own_sent({**receipt, "sender_seq": 4}, {"to": "bob", "body": "x"})
    assert got.messages == [{"seq": 4, "msg_id": "m", "conv": "d:alice:bob", "from": "alice", "to": "bob",
                             "kind": "text", "body": "x", "client_msg_id": "c", "ts": 1}]
    assert sdk.last_seq == 4 and not sdk._wake.is_set()
    await sdk._own_sent({**receipt, "sender_seq": 4}, {"to": "bob", "body": "x"})  # already held
    assert len(got.messages) == 1
    await sdk.close()


async def test_falls_back_to_long_poll_when_the_websocket_port_is_closed(node: Node) -> None:
    got = Inbox()
    dead_ws = f"ws://127.0.0.1:{free_port()}/ws"
    async with client(node.base_url, "bob", got, ws_url=dead_ws) as bob, \
            client(node.base_url, "alice") as alice:
        assert bob.connected_via == "longpoll"
        assert alice.connected_via == "ws"
        for i in range(5):
            await alice.send("bob", f"m{i}")
        assert await got.wait_for(5) == [f"m{i}" for i in range(5)]


async def test_falls_back_to_long_poll_when_the_upgrade_is_refused(node: Node) -> None:
    """A proxy that answers the upgrade with a plain HTTP error (here the API's JSON 404)."""
    got = Inbox()
    refusing = node.ws_url.replace("/ws", "/api/v1/no-websocket-here")
    async with client(node.base_url, "bob", got, ws_url=refusing) as bob, \
            client(node.base_url, "alice", transport="longpoll") as alice:
        assert bob.connected_via == "longpoll"
        await alice.send("bob", "through the poll")
        assert await got.wait_for(1) == ["through the poll"]


async def test_ws_only_client_does_not_fall_back(node: Node) -> None:
    sdk = Client(node.base_url, "bob", PASSWORD, register=True, transport="ws",
                 ws_url=f"ws://127.0.0.1:{free_port()}/ws")
    with pytest.raises(Exception, match="no node reachable"):
        await sdk.start(timeout_secs=2)


async def test_reconnects_after_the_server_restarts(settings: Settings) -> None:
    first = await Node.start(settings)
    got = Inbox()
    second: Node | None = None
    try:
        async with client(first.base_url, "bob", got) as bob, client(first.base_url, "alice") as alice:
            await alice.send("bob", "before")
            await got.wait_for(1)
            await stop_node(first)
            # A send while the node is down is retried (same client_msg_id) until it is back.
            pending = asyncio.create_task(alice.send("bob", "during", deadline_secs=60))
            await asyncio.sleep(1.0)
            assert not pending.done()
            second = await Node.start(settings)
            receipt = await asyncio.wait_for(pending, 30)
            assert receipt["duplicate"] is False
            await alice.send("bob", "after")
            assert await got.wait_for(3) == ["before", "during", "after"]
            assert bob.reconnects >= 1
            await asyncio.wait_for(bob.connected.wait(), 20)
            assert_in_seq_order_once(got)
    finally:
        if second is not None:
            await second.stop()
        else:
            with contextlib.suppress(Exception):
                await first.stop()


async def test_long_polls_reuse_one_connection(node: Node) -> None:
    got = Inbox()
    async with client(node.base_url, "bob", got, transport="longpoll") as bob, \
            client(node.base_url, "alice", transport="ws") as alice:
        for i in range(5):  # each message answers bob's poll; the next poll goes out on the same socket
            await alice.send("bob", f"m{i}")
            await got.wait_for(i + 1, sender="alice")
        assert got.bodies("alice") == [f"m{i}" for i in range(5)]
        assert bob._poll.opened == 1


async def test_sends_without_a_websocket_reuse_keep_alive_connections(node: Node) -> None:
    """A long-poll client's sends go over kept-alive connections, one per send in flight; an error
    answer leaves its connection usable; every message arrives once, in order."""
    got = Inbox()
    async with client(node.base_url, "alice", transport="longpoll") as alice, \
            client(node.base_url, "bob", got, transport="ws"):
        for i in range(5):
            await alice.send("bob", f"m{i}")
        assert alice._sends.opened == 1
        with pytest.raises(ApiError) as refused:
            await alice.send("nobody-here", "x")
        assert refused.value.status == 404
        await alice.send("bob", "m5")
        assert alice._sends.opened == 1
        await asyncio.gather(*(alice.send("bob", f"c{i}") for i in range(3)))
        assert alice._sends.opened <= 3
        await got.wait_for(9, sender="alice")
        assert got.bodies("alice")[:6] == [f"m{i}" for i in range(6)]
        assert sorted(got.bodies("alice")[6:]) == ["c0", "c1", "c2"]
    assert_in_seq_order_once(got)


async def test_backoff_starts_over_after_long_polls_worked_again(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []

    def quick_backoff(attempt: int, **_: Any) -> float:
        attempts.append(attempt)
        return 0.05

    monkeypatch.setattr("imclient.connection.backoff_delay", quick_backoff)
    node: Node | None = await Node.start(settings)
    try:
        async with client(node.base_url, "bob", transport="longpoll", poll_timeout_secs=1) as bob:
            for _ in range(2):  # two outages, with working polls in between
                assert node is not None
                await stop_node(node)
                node = None
                await asyncio.sleep(1.0)  # failing polls back off: attempts 0, 1, 2...
                outage = len(attempts)
                node = await Node.start(settings)
                await asyncio.wait_for(bob.connected.wait(), 20)
                await asyncio.sleep(1.5)  # at least one poll answered in full
                attempts_of_outage = attempts[:outage]
                assert attempts_of_outage[:3] == [0, 1, 2], attempts_of_outage
                attempts.clear()
    finally:
        if node is not None:
            await node.stop()


async def test_rotates_to_a_live_node(node: Node) -> None:
    got = Inbox()
    dead = f"http://127.0.0.1:{free_port()}"
    async with client([dead, node.base_url], "bob", got) as bob, client([node.base_url, dead], "alice") as alice:
        assert bob.base_url == node.base_url
        await alice.send("bob", "found you")
        assert await got.wait_for(1) == ["found you"]


async def test_retry_with_the_same_client_msg_id_is_stored_once(node: Node) -> None:
    got = Inbox()
    async with client(node.base_url, "bob", got), client(node.base_url, "alice") as alice:
        first = await alice.send("bob", "once", client_msg_id="fixed-id")
        again = await alice.send("bob", "once", client_msg_id="fixed-id")
        assert (first["duplicate"], again["duplicate"]) == (False, True)
        assert again["msg_id"] == first["msg_id"]
        await alice.send("bob", "next")
        assert await got.wait_for(2) == ["once", "next"]


async def test_lost_receipt_is_retried_and_stored_once(node: Node) -> None:
    """The server stores the message but the answer never reaches the client: the SDK retries with the
    same client_msg_id and gets the original receipt back; the recipient sees one message."""
    proxy = await ReplyDroppingProxy(node.port).start()
    got = Inbox()
    try:
        async with client(node.base_url, "bob", got), \
                client(proxy.url, "alice", transport="longpoll") as alice:
            proxy.drop = 1
            receipt = await alice.send("bob", "exactly once")
            assert proxy.dropped == 1
            assert receipt["duplicate"] is True  # the first attempt had stored it
            await alice.send("bob", "then this")
            assert await got.wait_for(2) == ["exactly once", "then this"]
            await asyncio.sleep(0.3)
            assert got.bodies() == ["exactly once", "then this"]
    finally:
        await proxy.close()


async def test_unknown_recipient_is_not_retried(node: Node) -> None:
    async with client(node.base_url, "alice") as alice:
        with pytest.raises(ApiError) as info:
            await alice.send("nobody", "hi")
        assert info.value.code == "unknown_recipient"


async def test_send_gives_up_at_its_deadline(node: Node) -> None:
    async with client(node.base_url, "alice", transport="longpoll") as alice:
        alice.urls = [f"http://127.0.0.1:{free_port()}"]
        alice._node = 0
        with pytest.raises(SendFailed) as info:
            await alice.send("alice", "nowhere", client_msg_id="k1", deadline_secs=1.5)
        assert info.value.client_msg_id == "k1"


async def test_wrong_password_is_refused_at_start(node: Node) -> None:
    await node.register("carol")
    sdk = Client(node.base_url, "carol", "wrong password!")
    with pytest.raises(ApiError) as info:
        await sdk.start()
    assert info.value.code == "bad_credentials"
    await sdk.close()


async def test_trimmed_cursor_reports_a_gap_and_resumes(node: Node) -> None:
    """A device that comes back with a cursor below the trimmed floor hears about the gap."""
    alice_token = await node.user("alice")
    bob_token = await node.user("bob")
    for i in range(6):
        await node.send(alice_token, "bob", f"m{i}")
    await node.ack(bob_token, 4)  # bob's only device holds 1..4: they are trimmed
    got = Inbox()
    sdk = Client(node.base_url, "bob", PASSWORD, on_message=got, on_gap=got.on_gap, after=1)
    await sdk.start()
    try:
        assert await got.wait_for(2) == ["m4", "m5"]
        assert len(got.gaps) == 1 and got.gaps[0]["gap"] is True
        assert sdk.last_seq == 6
    finally:
        await sdk.close()


async def test_starts_with_a_given_token_and_logs_in_again_when_it_is_revoked(node: Node) -> None:
    token = await node.user("bob")
    got = Inbox()
    sdk = Client(node.base_url, "bob", PASSWORD, on_message=got, token=token, transport="longpoll")
    await sdk.start()
    try:
        assert sdk.token == token
        await node.request("DELETE", "/api/v1/tokens", token=token)  # revoke every token of bob
        alice = await node.user("alice")
        await node.send(alice, "bob", "after logout")
        await got.wait_for(1)  # (the poll that was waiting had been authorised before the logout)
        await node.send(alice, "bob", "with a new token")
        assert await got.wait_for(2) == ["after logout", "with a new token"]
        assert sdk.token != token
    finally:
        await sdk.close()


async def test_a_websocket_client_that_hears_no_notify_pulls_when_idle(node: Node) -> None:
    """A notify is a hint: one that never comes delays a message by ``idle_pull_secs`` at most."""
    got = Inbox()
    async with client(node.base_url, "bob", got, transport="ws", idle_pull_secs=0.5):
        alice = await node.user("alice")
        for socket in node.service.hub.table.connections["bob"]:
            socket.inbox_changed = lambda seq: None  # type: ignore[method-assign]  # its notifies are lost
        await node.send(alice, "bob", "no notify for this one")
        assert await got.wait_for(1, sender="alice", timeout=5) == ["no notify for this one"]
