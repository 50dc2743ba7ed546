"""Notifies cross nodes through Redis: X on node 1 (WebSocket) and Y on node 2 (long-poll)."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from tests.cluster.conftest import StartNodes
from tests.cluster.exchange import (
    POLL_TIMEOUT_SECS,
    expected,
    receive_poll,
    receive_ws,
    send_rest,
    send_ws,
)
from tests.cluster.procs import RedisServer

MESSAGES_EACH_WAY = 200


@pytest.mark.parametrize(("redis_server", "node_count"), [("single", 2), ("single", 3), ("cluster", 2)],
                         indirect=["redis_server"])
async def test_200_messages_each_way_arrive_once_in_order(start_nodes: StartNodes, node_count: int) -> None:
    nodes = start_nodes(node_count)
    one, two = nodes[0].client, nodes[1].client
    x = await one.user("xavier")
    y = await two.user("yvonne")
    async with one.ws(x) as x_inbox, one.ws(x) as x_outbox:
        x_gets = asyncio.ensure_future(receive_ws(x_inbox, sender="yvonne", count=MESSAGES_EACH_WAY))
        y_gets = asyncio.ensure_future(receive_poll(two, y, sender="xavier", count=MESSAGES_EACH_WAY))
        await asyncio.sleep(0.3)  # Y's first long-poll is waiting
        await asyncio.wait_for(asyncio.gather(
            send_ws(x_outbox, to="yvonne", prefix="x", count=MESSAGES_EACH_WAY),
            send_rest(two, y, to="xavier", prefix="y", count=MESSAGES_EACH_WAY),
        ), 240)
        x_got, y_got = await asyncio.wait_for(asyncio.gather(x_gets, y_gets), 120)
    assert x_got == expected("y", MESSAGES_EACH_WAY)
    assert y_got == expected("x", MESSAGES_EACH_WAY)


@pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)
async def test_notify_wakes_a_long_poll_on_another_node(start_nodes: StartNodes) -> None:
    one, two = (n.client for n in start_nodes(2))
    x = await one.user("xavier")
    y = await two.user("yvonne")
    poll = asyncio.ensure_future(two.poll(y, after=0, timeout=POLL_TIMEOUT_SECS))
    await asyncio.sleep(0.5)
    assert (await one.send(x, "yvonne", "wake up")).status == 201
    # Well below the poll's own timeout: only the notify through Redis can have ended it.
    response = await asyncio.wait_for(poll, POLL_TIMEOUT_SECS - 25)
    assert [m["body"] for m in response.body["messages"]] == ["wake up"]


async def test_notify_goes_only_to_the_node_holding_the_user(
    start_nodes: StartNodes, redis_server: RedisServer,
) -> None:
    one, two, _three = (n.client for n in start_nodes(3))
    x = await one.user("xavier")
    y = await two.user("yvonne")
    spy = Redis.from_url(redis_server.url)
    pubsub = spy.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe("im:notify:*")
    try:
        async with two.ws(y):  # Y is connected to node 2 only
            for i in range(5):
                assert (await one.send(x, "yvonne", f"m{i}")).status == 201
            seen: dict[str, list[dict]] = {}
            deadline = asyncio.get_running_loop().time() + 3
            while asyncio.get_running_loop().time() < deadline:
                message = await pubsub.get_message(timeout=0.5)
                if message is not None:
                    channel = message["channel"].decode()
                    seen.setdefault(channel, []).append(json.loads(message["data"]))
    finally:
        await pubsub.aclose()
        await spy.aclose()
    assert set(seen) == {"im:notify:node2"}, seen
    heads = [m["h"]["yvonne"] for m in seen["im:notify:node2"]]
    assert heads and int(heads[-1]) == 5
