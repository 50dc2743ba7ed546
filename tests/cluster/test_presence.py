"""Presence across nodes: appears on connect, goes on disconnect and when a node dies (after its TTL)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.cluster.conftest import StartNodes
from tests.helpers import Node, eventually

# Short timings so the TTL expiry of a killed node is observed in seconds.
FAST = {"presence_ttl_secs": 2, "heartbeat_secs": 0.5, "presence_linger_secs": 0.5}
WAIT_SECS, CHECK_EVERY_SECS = 20.0, 0.2


async def presence(node: Node, token: str, user: str) -> dict[str, Any]:
    response = await node.request("GET", f"/api/v1/presence/{user}", token=token)
    assert response.status == 200, response.body
    return response.body


@pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)
async def test_presence_on_connect_disconnect_and_node_death(start_nodes: StartNodes) -> None:
    node1, node2 = start_nodes(2, **FAST)
    one, two = node1.client, node2.client
    x = await one.user("xavier")
    y = await two.user("yvonne")
    assert (await presence(two, y, "xavier"))["online"] is False

    async with one.ws(x):
        # The connect waited for its presence write: visible from the other node at once.
        info = await presence(two, y, "xavier")
        assert info == {"user": "xavier", "online": True, "connections": 1, "nodes": ["node1"]}
        async with two.ws(x):
            await eventually(lambda: _is(two, y, "xavier", connections=2, nodes=["node1", "node2"]),
                             what="two connections on two nodes",
                             timeout_secs=WAIT_SECS, interval_secs=CHECK_EVERY_SECS)
            listing = await two.request("GET", "/api/v1/presence", token=y)
            assert listing.body["users"] == [
                {"user": "xavier", "online": True, "connections": 2, "nodes": ["node1", "node2"]}]
    await eventually(lambda: _is(two, y, "xavier", online=False), what="offline after disconnect",
                     timeout_secs=WAIT_SECS, interval_secs=CHECK_EVERY_SECS)

    # A node killed with connections open cannot clean up: its entries expire with its TTL.
    async with one.ws(x):
        assert (await presence(two, y, "xavier"))["nodes"] == ["node1"]
        node1.kill()
        await eventually(lambda: _is(two, y, "xavier", online=False), what="offline after node1 died",
                         timeout_secs=WAIT_SECS, interval_secs=CHECK_EVERY_SECS)


async def test_a_waiting_long_poll_counts_as_a_connection(start_nodes: StartNodes) -> None:
    one, two = (n.client for n in start_nodes(2, **FAST))
    x = await one.user("xavier")
    y = await two.user("yvonne")
    poll = asyncio.ensure_future(two.poll(y, after=0, timeout=5))
    await eventually(lambda: _is(one, x, "yvonne", connections=1, nodes=["node2"]), what="long-poll present",
                     timeout_secs=WAIT_SECS, interval_secs=CHECK_EVERY_SECS)
    await poll
    await eventually(lambda: _is(one, x, "yvonne", online=False), what="gone after the poll ended",
                     timeout_secs=WAIT_SECS, interval_secs=CHECK_EVERY_SECS)


@pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)
async def test_online_listing_pages_across_nodes(start_nodes: StartNodes) -> None:
    one, two = (n.client for n in start_nodes(2, **FAST))
    tokens = {}
    for name in ("ann", "bob", "cat", "dan", "eve"):
        tokens[name] = await one.user(name)
    async with one.ws(tokens["ann"]), two.ws(tokens["bob"]), one.ws(tokens["cat"]), two.ws(tokens["dan"]):
        users, after = [], ""
        for _ in range(5):
            query = {"limit": 3, **({"after": after} if after else {})}
            page = await one.request("GET", "/api/v1/presence", token=tokens["eve"], query=query)
            assert page.status == 200, page.body
            users += [(u["user"], tuple(u["nodes"])) for u in page.body["users"]]
            if not page.body["more"]:
                break
            after = page.body["next"]
    assert users == [("ann", ("node1",)), ("bob", ("node2",)), ("cat", ("node1",)), ("dan", ("node2",))]


async def test_presence_needs_a_token_and_a_valid_user_id(start_nodes: StartNodes) -> None:
    (node,) = start_nodes(1)
    token = await node.client.user("xavier")
    assert (await node.client.request("GET", "/api/v1/presence/xavier")).status == 401
    bad = await node.client.request("GET", "/api/v1/presence/NOT%20valid", token=token)
    assert bad.status == 400 and bad.body["error"]["field"] == "user"
    bad = await node.client.request("GET", "/api/v1/presence", token=token, query={"limit": 0})
    assert bad.status == 400 and bad.body["error"]["field"] == "limit"


async def test_single_node_presence_without_redis(node: Node) -> None:
    x = await node.user("xavier")
    async with node.ws(x):
        info = await presence(node, x, "xavier")
        assert info["online"] is True and info["connections"] == 1
        listing = await node.request("GET", "/api/v1/presence", token=x)
        assert [u["user"] for u in listing.body["users"]] == ["xavier"]


async def _is(node: Node, token: str, user: str, **expected: Any) -> bool:
    info = await presence(node, token, user)
    return all(info[key] == value for key, value in expected.items())
