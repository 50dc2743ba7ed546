"""One device cursor, three transports: switching mid-stream loses and repeats nothing."""

from __future__ import annotations

from tests.helpers import Node, untrimmed_seqs


async def test_switching_transports_mid_stream_sees_each_message_once_in_order(eager_trim_node: Node) -> None:
    node = eager_trim_node
    alice, bob = await node.user("alice"), await node.user("bob")
    received: list[str] = []
    last = 0

    async def send_batch(start: int) -> None:
        for i in range(start, start + 4):
            assert (await node.send(alice, "bob", f"m{i}")).status == 201

    # 1. WebSocket: notify, pull, ack.
    async with node.ws(bob) as ws:
        await send_batch(0)
        while last < 4:
            await ws.notify()
            page = await ws.pull(after=last)
            received += [m["body"] for m in page["messages"]]
            last = page["next"]
            await ws.ack(last)
    # 2. Long-poll from the same cursor (it acknowledges `after` itself).
    await send_batch(4)
    while last < 8:
        page = (await node.poll(bob, after=last, timeout=5, limit=3)).body
        received += [m["body"] for m in page["messages"]]
        last = page["next"]
    # 3. REST pull + ack.
    await send_batch(8)
    page = (await node.pull(bob, after=last)).body
    received += [m["body"] for m in page["messages"]]
    last = page["next"]
    assert (await node.ack(bob, last)).status == 200
    # 4. Back to WebSocket, msgpack this time.
    await send_batch(12)
    async with node.ws(bob, binary=True) as ws:
        page = await ws.pull(after=last)
        received += [m["body"] for m in page["messages"]]
        last = page["next"]
        await ws.ack(last)
    assert received == [f"m{i}" for i in range(16)]
    assert last == 16
    assert await untrimmed_seqs(node.service.store, "bob") == []
