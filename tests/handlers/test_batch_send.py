"""POST /api/v1/messages with {"messages": [...]}: a backend sends many messages in one request, each
with its own receipt or error, in order, stored once however often the batch is retried."""

from __future__ import annotations

from typing import Any

from tests.helpers import Node, drain_inbox


async def batch(node: Node, token: str, messages: list[Any]) -> Any:
    return await node.request("POST", "/api/v1/messages", token=token, json_body={"messages": messages})


async def test_a_batch_answers_each_item_and_keeps_the_order(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    await node.register("carol")
    gid = (await node.request("POST", "/api/v1/groups", token=alice,
                              json_body={"name": "g", "members": ["bob"]})).body["group"]
    items: list[Any] = [
        {"to": "bob", "body": "one", "client_msg_id": "b1"},
        {"to": "nobody", "body": "lost", "client_msg_id": "b2"},  # no such user
        {"to": "bob", "body": "   ", "client_msg_id": "b3"},  # blank
        "not an object",
        {"group": gid, "body": "to the group", "client_msg_id": "b4"},
        {"to": "carol", "body": "hi carol", "client_msg_id": "b5"},
        {"to": "bob", "body": "two", "client_msg_id": "b6"},
        {"to": "bob", "body": "one again", "client_msg_id": "b1"},  # the same id twice: one message
    ]
    response = await batch(node, alice, items)
    assert response.status == 200, response.body
    results = response.body["results"]
    assert [r["status"] for r in results] == [201, 404, 400, 400, 201, 201, 201, 200]
    assert results[1]["error"]["code"] == "unknown_recipient"
    assert results[2]["error"]["code"] == "empty_body"
    assert "error" in results[3] and "receipt" not in results[3]
    assert results[7]["receipt"]["duplicate"] is True
    assert results[7]["receipt"]["msg_id"] == results[0]["receipt"]["msg_id"]
    assert results[4]["receipt"]["conv"] == f"g:{gid}"
    messages, _ = await drain_inbox(node, bob)
    assert [m["body"] for m in messages if m["kind"] == "text"] == ["one", "to the group", "two"]
    # Retrying the whole batch stores nothing new.
    again = await batch(node, alice, [items[0], items[4], items[6]])
    assert [r["status"] for r in again.body["results"]] == [200, 200, 200]
    assert [r["receipt"]["msg_id"] for r in again.body["results"]] == [
        results[0]["receipt"]["msg_id"], results[4]["receipt"]["msg_id"], results[6]["receipt"]["msg_id"]]
    more, _ = await drain_inbox(node, bob, after=len(messages))
    assert more == []


async def test_a_batch_is_bounded_and_must_be_a_list(node: Node) -> None:
    alice = await node.user("alice")
    await node.register("bob")
    too_many = [{"to": "bob", "body": f"m{i}", "client_msg_id": f"c{i}"} for i in range(101)]
    response = await batch(node, alice, too_many)
    assert response.status == 413 and response.error_code == "too_large"
    assert (await batch(node, alice, [])).status == 400
    not_a_list = await node.request("POST", "/api/v1/messages", token=alice, json_body={"messages": {"to": "bob"}})
    assert not_a_list.status == 400 and not_a_list.body["error"]["field"] == "messages"
    bob = await node.login("bob")
    assert (await node.pull(bob)).body["messages"] == []  # nothing of the refused batches was stored
