"""Write-first delivery over the REST API: send, pull, ack; ordering, idempotency, devices, trimming."""

from __future__ import annotations

import asyncio

from tests.helpers import Node, drain_inbox, untrimmed_seqs


async def test_send_returns_receipt_after_write_and_recipient_pulls_it(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    sent = await node.send(alice, "bob", "hello bob", client_msg_id="c-1")
    assert sent.status == 201
    receipt = sent.body
    assert receipt["seq"] == 1 and receipt["client_msg_id"] == "c-1" and receipt["duplicate"] is False
    # The receipt came after the write: the archive and the inbox hold it now.
    stored = await node.service.store.messages.find_one({"cmid": "c-1"})
    assert stored is not None and str(stored["_id"]) == receipt["msg_id"]
    page = (await node.pull(bob)).body
    assert [(m["seq"], m["from"], m["body"], m["msg_id"]) for m in page["messages"]] == [
        (1, "alice", "hello bob", receipt["msg_id"])]
    assert page["next"] == 1 and page["head"] == 1 and page["gap"] is False


async def test_sender_timeline_includes_own_messages(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    await node.send(alice, "bob", "one")
    await node.send(bob, "alice", "two")
    messages, _ = await drain_inbox(node, alice)
    assert [(m["from"], m["body"]) for m in messages] == [("alice", "one"), ("bob", "two")]


async def test_offline_user_gets_everything_in_order_on_return(node: Node) -> None:
    alice, carol = await node.user("alice"), await node.user("carol")
    await node.register("bob")
    for i in range(30):
        await node.send(alice if i % 2 else carol, "bob", f"m{i}")
    bob = await node.login("bob")  # comes online later
    messages, last = await drain_inbox(node, bob)
    assert [m["body"] for m in messages] == [f"m{i}" for i in range(30)]
    assert [m["seq"] for m in messages] == list(range(1, 31)) and last == 30


async def test_retry_with_same_client_msg_id_stores_nothing_new(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    first = await node.send(alice, "bob", "once", client_msg_id="retry-me")
    again = await node.send(alice, "bob", "once", client_msg_id="retry-me")
    assert first.status == 201 and again.status == 200
    assert again.body["duplicate"] is True
    assert {k: v for k, v in again.body.items() if k != "duplicate"} == {
        k: v for k, v in first.body.items() if k != "duplicate"}
    messages, _ = await drain_inbox(node, bob)
    assert [m["body"] for m in messages] == ["once"]
    assert await node.service.store.messages.count_documents({}) == 1


async def test_concurrent_senders_one_inbox_no_gap_no_duplicate(node: Node) -> None:
    bob = await node.user("bob")
    senders = [await node.user(f"s{i}") for i in range(20)]
    per_sender = 5

    async def run(index: int, token: str) -> None:
        for n in range(per_sender):
            response = await node.send(token, "bob", f"{index}:{n}")
            assert response.status == 201, response.body

    await asyncio.gather(*(run(i, t) for i, t in enumerate(senders)))
    messages, last = await drain_inbox(node, bob)
    assert [m["seq"] for m in messages] == list(range(1, 20 * per_sender + 1)) and last == 100
    assert len({m["msg_id"] for m in messages}) == 100
    for index in range(20):  # each sender's messages arrive in the order it sent them
        own = [int(m["body"].split(":")[1]) for m in messages if m["body"].startswith(f"{index}:")]
        assert own == list(range(per_sender))


async def test_ack_trims_inbox_and_archive_keeps_history(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    for i in range(5):
        await node.send(alice, "bob", f"m{i}")
    ack = await node.ack(bob, 3)
    assert ack.status == 200 and ack.body == {"cursor": 3, "trimmed": 3}
    store = node.service.store
    assert await untrimmed_seqs(store, "bob") == [4, 5]
    # The archive keeps all 5 (besides them: the delivered receipt the trim sent alice).
    assert await store.messages.count_documents({"conv": "d:alice:bob", "kind": {"$ne": "receipt"}}) == 5
    page = (await node.pull(bob, after=3)).body
    assert [m["body"] for m in page["messages"]] == ["m3", "m4"]
    # Asking again from a trimmed point says so instead of silently skipping.
    stale = (await node.pull(bob, after=0)).body
    assert stale["gap"] is True and [m["seq"] for m in stale["messages"]] == [4, 5]


async def test_two_devices_each_receive_everything(eager_trim_node: Node) -> None:
    node = eager_trim_node
    alice = await node.user("alice")
    await node.register("bob")
    phone, browser = await node.login("bob", device="phone"), await node.login("bob", device="browser")
    for i in range(3):
        await node.send(alice, "bob", f"a{i}")
    phone_msgs, phone_last = await drain_inbox(node, phone)
    assert (await node.ack(phone, phone_last)).body["trimmed"] == 3  # the browser has not acked yet: no cursor
    await node.ack(browser, 0)  # the browser registers its cursor
    for i in range(3, 6):
        await node.send(alice, "bob", f"a{i}")
    phone_more, phone_last = await drain_inbox(node, phone, after=phone_last)
    assert (await node.ack(phone, phone_last)).body["trimmed"] == 3  # held back by the browser
    browser_msgs, browser_last = await drain_inbox(node, browser, after=3)
    assert [m["body"] for m in phone_msgs + phone_more] == [f"a{i}" for i in range(6)]
    assert [m["body"] for m in browser_msgs] == [f"a{i}" for i in range(3, 6)]
    assert (await node.ack(browser, browser_last)).body["trimmed"] == 6


async def test_a_device_that_pulled_but_has_not_acked_yet_still_gets_everything(eager_trim_node: Node) -> None:
    """The laptop pulls (nothing yet), ten messages come, the phone pulls and acks them: the laptop's
    next pull still has all ten, with no gap, because a device is active from its first pull."""
    node = eager_trim_node
    alice = await node.user("alice")
    await node.register("bob")
    laptop, phone = await node.login("bob", device="laptop"), await node.login("bob", device="phone")
    first = (await node.pull(laptop, after=0)).body
    assert first["messages"] == [] and first["head"] == 0
    for i in range(10):
        await node.send(alice, "bob", f"m{i}")
    _, phone_last = await drain_inbox(node, phone)
    assert (await node.ack(phone, phone_last)).body["trimmed"] == 0  # held back by the laptop
    page = (await node.pull(laptop, after=0)).body
    assert page["gap"] is False and [m["body"] for m in page["messages"]] == [f"m{i}" for i in range(10)]
    assert (await node.ack(laptop, page["next"])).body["trimmed"] == 10


async def test_a_device_joins_at_the_after_it_gave_over_a_long_poll_and_a_socket(eager_trim_node: Node) -> None:
    node = eager_trim_node
    alice = await node.user("alice")
    await node.register("bob")
    web, tablet, phone = [await node.login("bob", device=d) for d in ("web", "tablet", "phone")]
    await node.send(alice, "bob", "m0")
    assert [m["body"] for m in (await node.poll(web, after=0, timeout=1)).body["messages"]] == ["m0"]
    async with node.ws(tablet) as ws:  # a socket, no pull yet: held from its (absent) cursor
        for i in range(1, 4):
            await node.send(alice, "bob", f"m{i}")
        _, phone_last = await drain_inbox(node, phone)
        assert (await node.ack(phone, phone_last)).body["trimmed"] == 0
        pulled = await ws.call({"t": "pull", "after": 0, "rid": 1})
        assert [m["body"] for m in pulled["messages"]] == [f"m{i}" for i in range(4)]
        await ws.call({"t": "ack", "upto": 4, "rid": 2})
    # The web device gave after=0, so it still holds m0..m3 back; its poll acknowledges them.
    assert (await node.ack(phone, phone_last)).body["trimmed"] == 0
    await node.poll(web, after=4, timeout=1)
    assert (await node.ack(phone, phone_last)).body["trimmed"] == 4


async def test_a_device_that_never_pulled_holds_nothing_back(eager_trim_node: Node) -> None:
    node = eager_trim_node
    alice = await node.user("alice")
    await node.register("bob")
    await node.login("bob", device="spare")  # signed in, never pulled, polled or connected
    phone = await node.login("bob", device="phone")
    await node.send(alice, "bob", "m0")
    _, last = await drain_inbox(node, phone)
    assert (await node.ack(phone, last)).body["trimmed"] == 1


async def test_ack_beyond_head_is_refused(node: Node) -> None:
    bob = await node.user("bob")
    response = await node.ack(bob, 5)
    assert response.status == 400 and response.body["error"]["field"] == "upto"


async def test_message_to_self_is_one_entry(node: Node) -> None:
    alice = await node.user("alice")
    sent = await node.send(alice, "alice", "note to self")
    assert sent.status == 201 and sent.body["seq"] == sent.body["sender_seq"] == 1
    messages, _ = await drain_inbox(node, alice)
    assert [m["body"] for m in messages] == ["note to self"]
