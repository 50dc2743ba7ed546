"""Receipts: sent (the reply), delivered (the recipient's ack trimmed it), read (the client said so)."""

from __future__ import annotations

from typing import Any

from tests.conftest import make_settings
from tests.helpers import Node, drain_inbox, eventually, untrimmed_seqs


def receipts_in(messages: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    return [(m["body"]["status"], m["body"]["by"], m["body"]["msg_ids"]) for m in messages if m["kind"] == "receipt"]


async def test_sent_delivered_read_arrive_in_order(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    async with node.ws(alice) as a, node.ws(bob) as b:
        sent = await a.send("bob", "hello")
        assert sent["t"] == "sent"  # 1. sent: after the write
        msg_id = sent["msg_id"]
        await b.notify()
        page = await b.pull(0)
        assert [m["msg_id"] for m in page["messages"]] == [msg_id]
        await b.ack(page["next"])  # 2. delivered: the ack trims bob's entry
        read = await b.call({"t": "read", "msg_ids": [msg_id]})  # 3. read
        assert read == {"t": "read", "ok": True, "msg_ids": [msg_id]}
        # A repeated read frame stores nothing new (checked in alice's inbox below).
        assert (await b.call({"t": "read", "msg_ids": [msg_id]}))["ok"] is True
        # Alice's inbox: her own message, then delivered, then read, as ordinary ordered entries.
        messages, _ = await drain_inbox(node, await node.login("alice"))
        assert [m["kind"] for m in messages] == ["text", "receipt", "receipt"]
        assert receipts_in(messages) == [("delivered", "bob", [msg_id]), ("read", "bob", [msg_id])]
        assert all(m["from"] == "bob" and m["to"] == "alice" for m in messages[1:])
        # Alice's socket heard of each (notify), and her own acks send no receipts for receipts.
        await a.ack(messages[-1]["seq"])
    bob_inbox, _ = await drain_inbox(node, await node.login("bob"))
    assert receipts_in(bob_inbox) == []


async def test_long_poll_ack_and_rest_read(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    ids = [(await node.send(alice, "bob", f"m{i}")).body["msg_id"] for i in range(3)]
    first = (await node.poll(bob, after=0, timeout=1)).body
    await node.poll(bob, after=first["next"], timeout=0)  # acknowledges -> trims -> delivered
    read = await node.request("POST", "/api/v1/receipts/read", token=bob, json_body={"msg_ids": ids[:2]})
    assert read.status == 200 and read.body["msg_ids"] == ids[:2]
    # One receipt entry covers the whole ack, another the read request.
    messages, _ = await drain_inbox(node, alice)
    assert receipts_in(messages) == [("delivered", "bob", sorted(ids)), ("read", "bob", sorted(ids[:2]))]
    # Reading someone else's message, one's own, or garbage gives nothing / a clear error.
    carol = await node.user("carol")
    assert (await node.request("POST", "/api/v1/receipts/read", token=carol, json_body={"msg_ids": ids})
            ).body["msg_ids"] == []
    assert (await node.request("POST", "/api/v1/receipts/read", token=alice, json_body={"msg_ids": ids})
            ).body["msg_ids"] == []
    for bad in ({"msg_ids": []}, {"msg_ids": ["nope"]}, {"msg_ids": "x"}, {}):
        response = await node.request("POST", "/api/v1/receipts/read", token=bob, json_body=bad)
        assert response.status == 400 and response.body["error"]["field"] == "msg_ids", bad


async def test_group_receipts_are_aggregated(node: Node) -> None:
    names = ["owner", "ann", "ben", "cat"]
    tokens = {n: await node.user(n) for n in names}
    created = await node.request("POST", "/api/v1/groups", token=tokens["owner"],
                                 json_body={"name": "g", "members": names[1:]})
    gid = created.body["group"]
    sent = await node.request("POST", "/api/v1/messages", token=tokens["owner"],
                              json_body={"group": gid, "body": "news", "client_msg_id": "n1"})
    msg_id = sent.body["msg_id"]
    for name in ("ann", "ben"):  # two members fetch and acknowledge
        page = (await node.pull(tokens[name])).body
        await node.ack(tokens[name], page["next"])
    await node.request("POST", "/api/v1/receipts/read", token=tokens["ann"], json_body={"msg_ids": [msg_id]})
    again = await node.request("POST", "/api/v1/receipts/read", token=tokens["ann"], json_body={"msg_ids": [msg_id]})
    assert again.status == 200 and again.body["msg_ids"] == []  # already read: nothing new
    summary = await node.request("GET", f"/api/v1/messages/{msg_id}/receipts", token=tokens["owner"])
    assert summary.status == 200, summary.body
    assert summary.body["recipients"] == 3
    assert summary.body["delivered"] == {"count": 2, "users": ["ann", "ben"]}
    assert summary.body["read"] == {"count": 1, "users": ["ann"]}
    # Members may ask too; outsiders get the same 404 as for a missing message.
    assert (await node.request("GET", f"/api/v1/messages/{msg_id}/receipts", token=tokens["cat"])).status == 200
    eve = await node.user("eve")
    hidden = await node.request("GET", f"/api/v1/messages/{msg_id}/receipts", token=eve)
    missing = await node.request("GET", "/api/v1/messages/ffffffffffffffffffffffff/receipts", token=eve)
    assert hidden.status == missing.status == 404 and hidden.error_code == missing.error_code
    # Not every member has it yet: the owner's inbox holds no receipt entry for it.
    messages, last = await drain_inbox(node, tokens["owner"])
    assert receipts_in(messages) == []
    # The last member gets it, then everyone reads it: one entry per milestone, delivered first.
    page = (await node.pull(tokens["cat"])).body
    await node.ack(tokens["cat"], page["next"])
    for name in ("ben", "cat", "ann"):
        await node.request("POST", "/api/v1/receipts/read", token=tokens[name], json_body={"msg_ids": [msg_id]})
    messages, _ = await drain_inbox(node, tokens["owner"], after=last)
    receipts = [m["body"] for m in messages if m["kind"] == "receipt"]
    assert receipts == [{"status": "delivered", "all": True, "msg_ids": [msg_id]},
                        {"status": "read", "all": True, "msg_ids": [msg_id]}]
    assert all(m["from"] == "owner" and m["conv"] == f"g:{gid}" for m in messages)


async def test_one_to_one_receipts_say_delivered_then_read(node: Node) -> None:
    alice, bob, eve = await node.user("alice"), await node.user("bob"), await node.user("eve")
    first = (await node.send(alice, "bob", "one")).body["msg_id"]
    second = (await node.send(alice, "bob", "two")).body["msg_id"]

    async def summary(msg_id: str, token: str = alice) -> dict:
        response = await node.request("GET", f"/api/v1/messages/{msg_id}/receipts", token=token)
        assert response.status == 200, response.body
        return response.body

    nobody = {"count": 0, "users": []}
    assert (await summary(first))["delivered"] == nobody and (await summary(first))["read"] == nobody
    assert (await summary(first))["recipients"] == 1
    page = (await node.pull(bob)).body
    await node.ack(bob, page["next"])  # bob's device holds both: delivered
    bob_only = {"count": 1, "users": ["bob"]}
    got = await summary(second)
    assert got["delivered"] == bob_only and got["read"] == nobody
    read = await node.request("POST", "/api/v1/receipts/read", token=bob, json_body={"msg_ids": [first]})
    assert read.body["msg_ids"] == [first]
    assert (await summary(first))["read"] == bob_only
    assert (await summary(second))["read"] == nobody  # read up to the first only
    assert (await summary(second, token=bob))["delivered"] == bob_only  # the recipient may ask too
    hidden = await node.request("GET", f"/api/v1/messages/{first}/receipts", token=eve)
    assert hidden.status == 404 and hidden.error_code == "unknown_message"
    notes = (await node.send(alice, "alice", "to self")).body["msg_id"]
    assert (await summary(notes))["recipients"] == 0


async def test_a_trim_put_off_by_the_interval_still_happens_without_another_ack(
        mongo, db_name, tmp_path) -> None:
    """With a trim interval, an ack soon after a trim does not trim at once; the trim (and its
    delivered receipt) follows when the interval ends, with no further ack from the client."""
    node = await Node.start(make_settings(mongo.url, db_name, tmp_path, trim_interval_secs=1.0))
    try:
        alice, bob = await node.user("alice"), await node.user("bob")
        first = (await node.send(alice, "bob", "one")).body["msg_id"]
        assert (await node.ack(bob, 1)).body["trimmed"] == 1
        second = (await node.send(alice, "bob", "two")).body["msg_id"]
        assert (await node.ack(bob, 2)).body["trimmed"] == 1  # within the interval: put off
        await eventually(lambda: untrimmed_seqs(node.service.store, "bob"), until=lambda kept: not kept,
                         what="the deferred trim")
        messages, _ = await drain_inbox(node, alice)
        assert receipts_in(messages) == [("delivered", "bob", [first]), ("delivered", "bob", [second])]
    finally:
        await node.stop()
