"""Login policy: `single` kicks the older session (on any node) with a kicked frame; `multi` keeps all."""

from __future__ import annotations

import asyncio

import pytest

from tests.cluster.conftest import StartNodes


@pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)
async def test_single_policy_kicks_the_older_session_on_another_node(start_nodes: StartNodes) -> None:
    one, two = (n.client for n in start_nodes(2, login_policy="single"))
    old = await one.user("xavier", device="phone")
    new = await two.login("xavier", device="laptop")
    y = await two.user("yvonne")
    async with one.ws(old) as old_ws, two.ws(new) as new_ws:
        kicked = await old_ws.reply(timeout=15)
        assert kicked["t"] == "kicked" and kicked["reason"] == "logged_in_elsewhere"
        await asyncio.wait_for(old_ws.closed.wait(), 15)
        assert old_ws.conn.close_code == 4409
        # The new session is served normally.
        assert (await one.send(y, "xavier", "hello")).status == 201
        seq = await new_ws.notify(timeout=15)
        assert (await new_ws.pull(after=seq - 1))["messages"][0]["body"] == "hello"


async def test_single_policy_kicks_on_the_same_node_and_ends_a_long_poll(start_nodes: StartNodes) -> None:
    (node,) = start_nodes(1, login_policy="single")
    client = node.client
    old = await client.user("xavier", device="phone")
    new = await client.login("xavier", device="laptop")
    poll = asyncio.ensure_future(client.poll(old, after=0, timeout=30))
    await asyncio.sleep(0.5)
    async with client.ws(new):
        response = await asyncio.wait_for(poll, 15)
        assert response.status == 409 and response.error_code == "kicked"


async def test_multi_policy_keeps_both_sessions_and_both_receive(start_nodes: StartNodes) -> None:
    one, two = (n.client for n in start_nodes(2))  # multi is the default
    phone = await one.user("xavier", device="phone")
    laptop = await two.login("xavier", device="laptop")
    y = await two.user("yvonne")
    async with one.ws(phone) as phone_ws, two.ws(laptop) as laptop_ws:
        assert (await two.send(y, "xavier", "to every device")).status == 201
        for ws in (phone_ws, laptop_ws):
            seq = await ws.notify(timeout=15)
            assert (await ws.pull(after=seq - 1))["messages"][0]["body"] == "to every device"
        assert phone_ws.replies.empty() and laptop_ws.replies.empty()  # nobody was kicked
