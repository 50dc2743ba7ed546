"""Friends over REST: request, accept, decline, remove, list; the direct-message policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config import Settings
from tests.conftest import make_settings
from tests.helpers import Node, running_node


def states(response) -> dict[str, str]:
    assert response.status == 200, response.body
    return {r["user"]: r["state"] for r in response.body["friends"]}


async def test_request_accept_list_remove(node: Node) -> None:
    alice, bob, carol = await node.user("alice"), await node.user("bob"), await node.user("carol")
    sent = await node.request("POST", "/api/v1/friends", token=alice, json_body={"user": "bob"})
    assert sent.status == 201 and sent.body["state"] == "outgoing"
    again = await node.request("POST", "/api/v1/friends", token=alice, json_body={"user": "bob"})
    assert again.status == 201 and again.body["state"] == "outgoing"  # idempotent
    assert states(await node.request("GET", "/api/v1/friends", token=bob)) == {"alice": "incoming"}
    # Alice cannot accept her own request.
    assert (await node.request("POST", "/api/v1/friends/bob/accept", token=alice)).error_code == "no_request"
    accepted = await node.request("POST", "/api/v1/friends/alice/accept", token=bob)
    assert accepted.status == 200 and accepted.body["state"] == "friends"
    assert states(await node.request("GET", "/api/v1/friends", token=alice)) == {"bob": "friends"}
    # Stored once per pair, whoever asked.
    assert await node.service.store.db["relations"].count_documents({}) == 1
    # Crossing requests make friends at once.
    await node.request("POST", "/api/v1/friends", token=carol, json_body={"user": "alice"})
    crossed = await node.request("POST", "/api/v1/friends", token=alice, json_body={"user": "carol"})
    assert crossed.body["state"] == "friends"
    assert states(await node.request("GET", "/api/v1/friends", token=alice)) == {"bob": "friends",
                                                                                 "carol": "friends"}
    removed = await node.request("DELETE", "/api/v1/friends/alice", token=bob)
    assert removed.status == 204
    assert states(await node.request("GET", "/api/v1/friends", token=alice)) == {"carol": "friends"}
    gone = await node.request("DELETE", "/api/v1/friends/alice", token=bob)
    assert gone.status == 404 and gone.error_code == "not_friends"


async def test_decline_and_bad_requests(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    await node.request("POST", "/api/v1/friends", token=alice, json_body={"user": "bob"})
    declined = await node.request("POST", "/api/v1/friends/alice/decline", token=bob)
    assert declined.status == 204
    assert states(await node.request("GET", "/api/v1/friends", token=alice)) == {}
    assert (await node.request("POST", "/api/v1/friends/alice/decline", token=bob)).status == 404
    cases = [
        ({"user": "alice"}, 400, "invalid"),   # oneself
        ({"user": "nobody"}, 404, "unknown_user"),
        ({"user": "Bad Id"}, 400, "invalid"),
        ({}, 400, "invalid"),
    ]
    for body, status, code in cases:
        response = await node.request("POST", "/api/v1/friends", token=alice, json_body=body)
        assert (response.status, response.error_code) == (status, code), (body, response.body)
        assert response.body["error"]["field"] == "user"
    assert (await node.request("GET", "/api/v1/friends")).status == 401


@pytest.fixture
def friends_only(settings: Settings, tmp_path: Path) -> Settings:
    return make_settings(settings.mongo_url, settings.mongo_db, tmp_path, direct_policy="friends")


@pytest.fixture
async def strict_node(friends_only: Settings) -> AsyncIterator[Node]:
    async with running_node(friends_only) as running:
        yield running


async def test_friends_policy_refuses_strangers(strict_node: Node) -> None:
    node = strict_node
    alice, bob = await node.user("alice"), await node.user("bob")
    refused = await node.send(alice, "bob", "hello stranger")
    assert refused.status == 403 and refused.error_code == "not_friends" and refused.body["error"]["field"] == "to"
    assert (await node.send(alice, "alice", "note to self")).status == 201
    async with node.ws(alice) as ws:
        frame = await ws.send("bob", "over ws")
        assert frame["t"] == "error" and frame["code"] == "not_friends"
    await node.request("POST", "/api/v1/friends", token=alice, json_body={"user": "bob"})
    assert (await node.send(alice, "bob", "still pending")).status == 403
    await node.request("POST", "/api/v1/friends/alice/accept", token=bob)
    assert (await node.send(alice, "bob", "hi friend")).status == 201
    bodies = [m["body"] for m in (await node.pull(bob)).body["messages"]]
    assert bodies == ["hi friend"]
    await node.request("DELETE", "/api/v1/friends/alice", token=bob)
    assert (await node.send(bob, "alice", "bye")).status == 403


async def test_anyone_policy_is_the_default(node: Node) -> None:
    alice, _ = await node.user("alice"), await node.user("bob")
    assert node.runtime.settings.direct_policy == "anyone"
    assert (await node.send(alice, "bob", "hi")).status == 201
