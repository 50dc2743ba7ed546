"""What the presence writer sends to a real Redis: a user whose connections come and go without their
count changing (a long-poll between two polls) costs no command; a change is written at once."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from im.cluster.redis_keys import RedisKeys
from im.cluster.redis_presence import RedisPresence
from im.delivery.hub import ConnectionTable
from tests.cluster.procs import RedisServer
from tests.helpers import eventually


class Poll:
    """A stand-in listener: one long-poll request."""


async def commands(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_pexpire", "cmdstat_hset", "cmdstat_hdel"))


async def test_a_long_poll_between_polls_costs_no_presence_write(redis_server: RedisServer) -> None:
    redis = Redis.from_url(redis_server.url)
    keys = RedisKeys()
    table = ConnectionTable()
    presence = RedisPresence(redis, table, keys=keys, node_id="n1", address="127.0.0.1:1", ttl_secs=30,
                             heartbeat_secs=10, linger_secs=5)
    await presence.start()
    try:
        first = Poll()
        table.add("bob", first, wall=time.time())
        await presence.connected("bob")
        assert await redis.hkeys(keys.presence("bob")) == [b"n1"]
        before = await commands(redis)
        for _ in range(20):  # poll answered, the next one comes: the count goes 1 -> 0 -> 1
            table.remove("bob", first, now=time.monotonic())
            presence.disconnected("bob")
            first = Poll()
            table.add("bob", first, wall=time.time())
            await presence.connected("bob")
            await asyncio.sleep(0.02)  # the writer runs between two polls
        await presence.resync()  # a full pass (as the heartbeat's) still writes what is there
        after_full = await commands(redis)
        assert after_full - before <= 6  # the full pass's few commands, none per poll
        assert await redis.hkeys(keys.presence("bob")) == [b"n1"]
        # A real change (a second connection) is written.
        table.add("bob", Poll(), wall=time.time())
        await presence.connected("bob")
        await eventually(lambda: commands(redis), until=lambda n: n > after_full, what="presence writes")
    finally:
        await presence.close()
        await redis.aclose()
