"""Redis stopped mid-stream and restarted: nodes keep serving, every message arrives, nodes resubscribe."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.cluster.conftest import StartNodes
from tests.cluster.exchange import expected, receive_poll, receive_ws, send_rest, send_ws
from tests.cluster.procs import RedisServer
from tests.helpers import eventually

BEFORE, DURING, AFTER = 40, 30, 40
TOTAL = BEFORE + DURING + AFTER


async def test_redis_restart_mid_stream_loses_nothing(start_nodes: StartNodes, redis_server: RedisServer) -> None:
    node1, node2 = start_nodes(2, heartbeat_secs=1, presence_ttl_secs=5)
    one, two = node1.client, node2.client
    x = await one.user("xavier")
    y = await two.user("yvonne")
    async with one.ws(x) as x_inbox, one.ws(x) as x_outbox:
        x_gets = asyncio.ensure_future(receive_ws(x_inbox, sender="yvonne", count=TOTAL))
        y_gets = asyncio.ensure_future(receive_poll(two, y, sender="xavier", count=TOTAL))
        await asyncio.sleep(0.3)

        async def both(first: int, count: int) -> None:
            await asyncio.wait_for(asyncio.gather(
                send_ws(x_outbox, to="yvonne", prefix="x", count=count, first=first),
                send_rest(two, y, to="xavier", prefix="y", count=count, first=first),
            ), 120)

        await both(0, BEFORE)
        redis_server.stop()
        await both(BEFORE, DURING)  # sends are stored and acknowledged without Redis
        await asyncio.sleep(1.5)
        redis_server.start()  # same port, empty: presence must be rewritten by the nodes
        await both(BEFORE + DURING, AFTER)
        x_got, y_got = await asyncio.wait_for(asyncio.gather(x_gets, y_gets), 120)
    assert x_got == expected("y", TOTAL)
    assert y_got == expected("x", TOTAL)

    counts = await redis_server.subscribers("im:notify:node1", "im:notify:node2")
    assert counts == {"im:notify:node1": 1, "im:notify:node2": 1}  # both nodes resubscribed
    for node in (node1, node2):
        log = node.log()
        # The outage is logged once per component, not once per message.
        assert log.count("bus: Redis unavailable") <= 1, log
        assert log.count("Redis unavailable for presence") <= 1, log
        assert "bus: resubscribed" in log


async def test_a_node_starts_and_serves_without_redis(start_nodes: StartNodes, redis_server: RedisServer) -> None:
    redis_server.stop()
    (node,) = start_nodes(1, heartbeat_secs=1, presence_ttl_secs=5)
    client = node.client
    x = await client.user("xavier")
    y = await client.user("yvonne")
    async with client.ws(y) as y_ws:
        assert (await client.send(x, "yvonne", "no redis needed")).status == 201
        seq = await y_ws.notify(timeout=15)  # same node: delivered without Redis
        assert (await y_ws.pull(after=seq - 1))["messages"][0]["body"] == "no redis needed"
        redis_server.start()

        async def yvonnes_presence() -> dict[str, Any]:
            return (await client.request("GET", "/api/v1/presence/yvonne", token=x)).body

        # Once Redis is back the node registers itself and its users.
        info = await eventually(yvonnes_presence, until=lambda body: body.get("online"), timeout_secs=20,
                                interval_secs=0.3, what="yvonne online")
    assert info["nodes"] == ["node1"]
