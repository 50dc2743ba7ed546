"""A restart loses nothing acknowledged as sent: a new app on the same database serves it all."""

from __future__ import annotations

from config import Settings
from tests.helpers import Node, drain_inbox


async def test_new_app_same_database_keeps_every_sent_message(settings: Settings) -> None:
    first = await Node.start(settings)
    try:
        alice, bob = await first.user("alice"), await first.user("bob")
        receipts = [(await first.send(alice, "bob", f"m{i}", client_msg_id=f"k{i}")).body for i in range(10)]
        early, _ = await drain_inbox(first, bob)
        assert len(early) == 10
        await first.ack(bob, 4)
    finally:
        await first.stop()

    second = await Node.start(settings)
    try:
        # Tokens stay valid (same secret), the trimmed cursor and the rest of the inbox are intact.
        remaining, _last = await drain_inbox(second, bob, after=4)
        assert [m["body"] for m in remaining] == [f"m{i}" for i in range(4, 10)]
        assert [m["msg_id"] for m in remaining] == [r["msg_id"] for r in receipts[4:]]
        # A retry after the restart still gets the original receipt and stores nothing.
        retry = await second.send(alice, "bob", "m3", client_msg_id="k3")
        assert retry.status == 200 and retry.body["msg_id"] == receipts[3]["msg_id"]
        # New messages continue the same seq line.
        assert (await second.send(alice, "bob", "after restart")).body["seq"] == 11
    finally:
        await second.stop()


async def test_shutdown_closes_sockets_with_going_away_and_answers_long_polls(settings: Settings) -> None:
    import asyncio

    node = await Node.start(settings)
    stopped = False
    try:
        bob = await node.user("bob")
        async with node.ws(bob) as ws:
            poll = asyncio.ensure_future(node.poll(bob, timeout=30))
            for _ in range(100):
                if node.service.hub.listener_count("bob") == 2:
                    break
                await asyncio.sleep(0.02)
            await node.stop()
            stopped = True
            await asyncio.wait_for(ws.closed.wait(), 10)
            assert ws.conn.close_code == 1001
            response = await asyncio.wait_for(poll, 10)
            assert response.status == 200 and response.body["messages"] == []
    finally:
        if not stopped:
            await node.stop()
