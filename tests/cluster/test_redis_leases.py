"""Inbox leases and announced heads in a real Redis (one redis-server, and a 3-master Redis Cluster where
the keys of one batch spread over every master): a writer waits for another node's turn, then reads the
heads that node committed in the same round trip."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from im.cluster.redis_keys import RedisKeys
from im.delivery.leases import LEASE_SECS, NoLeases, RedisLeases
from tests.cluster.procs import AnyRedisServer

USERS = [f"u{i:02d}" for i in range(24)]  # enough keys to land on every master of a cluster


@pytest.mark.timeout(120)
@pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)
async def test_turns_and_announced_heads_cross_nodes(redis_server: AnyRedisServer) -> None:
    client: Redis | RedisCluster = (RedisCluster.from_url(redis_server.url) if redis_server.kind == "cluster"
                                    else Redis.from_url(redis_server.url))
    keys = RedisKeys("im:test:")
    a, b = (RedisLeases(client, keys, name, NoLeases()) for name in ("a", "b"))
    try:
        assert await b.wait_turn(USERS) == {}
        await a.announce({user: (n + 1, "e1") for n, user in enumerate(USERS)})
        assert await b.wait_turn(USERS) == {user: (n + 1, "e1") for n, user in enumerate(USERS)}

        # a lost a race on two inboxes: b waits for a's turn on them (at most a lease's lifetime)...
        await a.take(USERS[:2])
        started = time.monotonic()
        await b.wait_turn(USERS[1:3])
        waited = time.monotonic() - started
        assert LEASE_SECS * 0.5 <= waited < LEASE_SECS * 5, waited
        # ...not for its own lease, and not once a released it.
        started = time.monotonic()
        await a.wait_turn(USERS[:2])
        await a.take(USERS[:2])
        await a.announce({USERS[0]: (40, "e1")})
        await a.release(USERS[:2])
        news = await b.wait_turn(USERS[:2])
        assert time.monotonic() - started < LEASE_SECS * 0.5
        assert news[USERS[0]] == (40, "e1")
    finally:
        await client.aclose()
