"""Notify routing remembers who holds a user for a moment, and never loses a notify for it: a user who
connected to another node since is told from the all-nodes heads channel."""

from __future__ import annotations

import asyncio

import pytest

from tests.cluster.conftest import StartNodes
from tests.cluster.procs import RedisServer, command_calls


@pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)
async def test_a_user_who_just_connected_elsewhere_is_notified(start_nodes: StartNodes) -> None:
    one, two = (n.client for n in start_nodes(2))
    x = await one.user("xavier")
    y = await two.user("yvonne")
    # Yvonne is offline: node 1 looks her up, finds no node, and remembers that.
    assert (await one.send(x, "yvonne", "while away")).status == 201
    async with two.ws(y) as ws:  # now she is on node 2, at once
        first = await ws.pull(after=0, limit=10)
        assert [m["body"] for m in first["messages"]] == ["while away"]
        assert (await one.send(x, "yvonne", "now here")).status == 201
        await ws.notify(timeout=5)  # from im:heads: node 1 still believes she is nowhere
        page = await ws.pull(after=first["next"], limit=10)
        assert [m["body"] for m in page["messages"]] == ["now here"]


async def test_lookups_are_remembered_between_batches(start_nodes: StartNodes, redis_server: RedisServer) -> None:
    one, two = (n.client for n in start_nodes(2))
    x = await one.user("xavier")
    y = await two.user("yvonne")
    async with two.ws(y) as ws:
        await asyncio.sleep(0.2)
        before = await command_calls(redis_server, "hkeys")
        for i in range(20):
            assert (await one.send(x, "yvonne", f"m{i}")).status == 201
        lookups = await command_calls(redis_server, "hkeys") - before
        last = 0
        got: list[str] = []
        while len(got) < 20:
            await ws.notify(timeout=5)
            page = await ws.pull(after=last, limit=50)
            got += [m["body"] for m in page["messages"] if m["from"] == "xavier"]
            last = page["next"]
    assert got == [f"m{i}" for i in range(20)]
    assert lookups <= 8  # two inboxes per message, looked up again only as the answers age
