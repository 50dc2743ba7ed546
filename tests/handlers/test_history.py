"""History paging (newest first, across trims) and encryption at rest seen from the raw database."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from tests.helpers import Node, drain_inbox, untrimmed_seqs


async def all_pages(node: Node, token: str, conv: str, limit: int) -> list[list[dict[str, Any]]]:
    pages, before = [], None
    while True:
        query: dict[str, Any] = {"limit": limit}
        if before:
            query["before"] = before
        response = await node.request("GET", f"/api/v1/conversations/{conv}/messages", token=token, query=query)
        assert response.status == 200, response.body
        pages.append(response.body["messages"])
        before = response.body["next_before"]
        if not response.body["more"]:
            return pages


async def test_history_pages_newest_first_across_a_trim(node: Node) -> None:
    alice, bob, carol = await node.user("alice"), await node.user("bob"), await node.user("carol")
    for i in range(23):
        await node.send(alice if i % 2 == 0 else bob, "bob" if i % 2 == 0 else "alice", f"m{i}")
    # Bob's inbox is trimmed completely; the history is not.
    _, last = await drain_inbox(node, bob)
    await node.ack(bob, last)
    assert await untrimmed_seqs(node.service.store, "bob") == []
    pages = await all_pages(node, bob, "d:alice:bob", limit=10)
    assert [len(p) for p in pages] == [10, 10, 3]
    bodies = [m["body"] for page in pages for m in page]
    assert bodies == [f"m{i}" for i in reversed(range(23))]  # newest first, receipts left out
    assert pages[0][0]["from"] == "alice" and pages[0][0]["kind"] == "text"
    # Participants only; a non-participant cannot tell it from a conversation that does not exist.
    for conv in ("d:alice:bob", "d:alice:nobody", "g:nogroup", "x"):
        refused = await node.request("GET", f"/api/v1/conversations/{conv}/messages", token=carol)
        assert refused.status == 404 and refused.error_code == "unknown_conversation", conv
    for bad in ({"limit": 0}, {"limit": 10_000}, {"before": "zz"}):
        response = await node.request("GET", "/api/v1/conversations/d:alice:bob/messages", token=bob, query=bad)
        assert response.status == 400, bad
    empty = await node.request("GET", "/api/v1/conversations/d:bob:carol/messages", token=bob)
    assert empty.body == {"messages": [], "next_before": None, "more": False}


async def test_group_history(node: Node) -> None:
    owner, ann = await node.user("owner"), await node.user("ann")
    gid = (await node.request("POST", "/api/v1/groups", token=owner,
                              json_body={"name": "g", "members": ["ann"]})).body["group"]
    for i in range(5):
        await node.request("POST", "/api/v1/messages", token=ann if i % 2 else owner,
                           json_body={"group": gid, "body": f"g{i}", "client_msg_id": f"h{i}"})
    pages = await all_pages(node, ann, f"g:{gid}", limit=2)
    assert [m["body"] for p in pages for m in p] == ["g4", "g3", "g2", "g1", "g0"]


async def test_raw_database_holds_no_plaintext_body(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    secret = "the-launch-code-is-0000"
    await node.send(alice, "bob", secret)
    gid = (await node.request("POST", "/api/v1/groups", token=alice,
                              json_body={"name": "g", "members": ["bob"]})).body["group"]
    await node.request("POST", "/api/v1/messages", token=bob,
                       json_body={"group": gid, "body": secret + "-group", "client_msg_id": "g"})
    page = (await node.pull(bob)).body
    await node.ack(bob, page["next"])  # a delivered receipt goes to alice: its body is sealed as well
    await node.request("POST", "/api/v1/files", token=alice, raw_body=secret.encode() * 10, query={"to": "bob"})
    # A client of its own, as someone holding only the database would.
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(node.runtime.settings.mongo_url)
    try:
        db = client[node.runtime.settings.mongo_db]
        dump = b""
        for name in await db.list_collection_names():
            async for doc in db[name].find({}):
                dump += repr(doc).encode() + b"\n"
        assert b"the-launch-code" not in dump and b"launch" not in dump
        async for doc in db["messages"].find({}):
            assert isinstance(doc["body"], bytes) and doc["body"][:1] == b"\x01"
        stored = b"".join([bytes(c["data"]) async for c in db["files.chunks"].find({})])
        assert secret.encode() not in stored
        # The data keys are stored wrapped, never in clear.
        keys = [d async for d in db["conv_keys"].find({})]
        assert {k["_id"] for k in keys} == {"d:alice:bob", f"g:{gid}"}
    finally:
        await client.close()
    # The API still reads the bodies back.
    assert [m["body"] for m in page["messages"]] == [secret, secret + "-group"]
    history = await node.request("GET", "/api/v1/conversations/d:alice:bob/messages", token=alice)
    assert [m["body"] for m in history.body["messages"]] == [secret]
