"""GET /api/v1/conversations: what a fresh device needs to draw its conversation list in one load."""

from __future__ import annotations

from typing import Any

from tests.helpers import Node


async def listing(node: Node, token: str, **query: Any) -> dict[str, Any]:
    response = await node.request("GET", "/api/v1/conversations", token=token, query=query)
    assert response.status == 200, response.body
    return response.body


async def every_page(node: Node, token: str, limit: int) -> list[dict[str, Any]]:
    found, before = [], None
    while True:
        page = await listing(node, token, limit=limit, **({"before": before} if before else {}))
        found += page["conversations"]
        if not page["more"]:
            assert page["next_before"] is None
            return found
        before = page["next_before"]


async def read(node: Node, token: str, msg_ids: list[str]) -> None:
    response = await node.request("POST", "/api/v1/receipts/read", token=token, json_body={"msg_ids": msg_ids})
    assert response.status == 200, response.body


async def test_a_fresh_device_lists_every_conversation_with_last_message_unread_and_read_marks(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    carol = await node.user("carol")
    gid = (await node.request("POST", "/api/v1/groups", token=alice,
                              json_body={"name": "Team", "members": ["bob", "carol"]})).body["group"]
    empty_gid = (await node.request("POST", "/api/v1/groups", token=carol,
                                    json_body={"name": "Quiet", "members": ["alice"]})).body["group"]
    sent = [await node.send(alice, "bob", f"to bob {i}") for i in range(3)]
    await node.request("POST", "/api/v1/messages", token=carol,
                       json_body={"group": gid, "body": "team news", "client_msg_id": "g1"})
    for i in range(2):
        await node.send(carol, "alice", f"from carol {i}")
    bob_ids = [s.body["msg_id"] for s in sent]
    await read(node, bob, bob_ids[:2])  # bob has read two of alice's three

    fresh = await node.login("alice", device="laptop")  # a device that has never pulled
    convs = {c["conv"]: c for c in await every_page(node, fresh, limit=50)}
    assert list(convs) == ["d:alice:carol", f"g:{gid}", "d:alice:bob", f"g:{empty_gid}"]  # newest first
    with_carol = convs["d:alice:carol"]
    assert with_carol["kind"] == "direct" and with_carol["peer"] == "carol" and with_carol["group"] is None
    assert with_carol["last_message"]["body"] == "from carol 1" and with_carol["last_message"]["from"] == "carol"
    assert with_carol["unread"] == 2 and with_carol["unread_more"] is False
    assert with_carol["last_read"] is None and with_carol["peer_read"] is None
    team = convs[f"g:{gid}"]
    assert team["kind"] == "group" and team["group"] == {"id": gid, "name": "Team"} and team["peer"] is None
    assert team["last_message"]["body"] == "team news" and team["unread"] == 1
    with_bob = convs["d:alice:bob"]
    assert with_bob["last_message"]["body"] == "to bob 2"
    assert with_bob["unread"] == 0  # all of it is alice's own
    assert with_bob["peer_read"] == bob_ids[1]  # alice's first two are read by bob, the third is not
    assert convs[f"g:{empty_gid}"]["last_message"] is None and convs[f"g:{empty_gid}"]["unread"] == 0

    # Bob's side: alice's messages, two read by him; the marker moves only forward.
    await read(node, bob, bob_ids[:1])
    bobs = await every_page(node, bob, limit=50)
    mine = next(c for c in bobs if c["conv"] == "d:alice:bob")
    assert mine["last_read"] == bob_ids[1] and mine["unread"] == 1


async def test_pages_follow_each_other_without_repeats(node: Node) -> None:
    alice = await node.user("alice")
    peers = [f"p{i}" for i in range(7)]
    for peer in peers:
        await node.register(peer)
        await node.send(alice, peer, f"hello {peer}")
    pages = []
    before = None
    while True:
        page = await listing(node, alice, limit=3, **({"before": before} if before else {}))
        pages.append([c["peer"] for c in page["conversations"]])
        before = page["next_before"]
        if not page["more"]:
            break
    assert pages == [["p6", "p5", "p4"], ["p3", "p2", "p1"], ["p0"]]


async def test_unread_counts_stop_at_the_cap(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    for i in range(103):
        await node.send(bob, "alice", f"m{i}")
    (entry,) = (await listing(node, alice))["conversations"]
    assert entry["unread"] == 100 and entry["unread_more"] is True


async def test_refused_input_and_unknown_users(node: Node) -> None:
    alice = await node.user("alice")
    assert (await listing(node, alice)) == {"conversations": [], "next_before": None, "more": False}
    for bad in ({"limit": 0}, {"limit": 1000}, {"before": "not-a-cursor"}):
        response = await node.request("GET", "/api/v1/conversations", token=alice, query=bad)
        assert response.status == 400 and response.body["error"]["code"], bad
    assert (await node.request("GET", "/api/v1/conversations")).status == 401
    # A message refused (unknown recipient) lists nothing.
    assert (await node.send(alice, "nobody", "hi")).status == 404
    assert (await listing(node, alice))["conversations"] == []
