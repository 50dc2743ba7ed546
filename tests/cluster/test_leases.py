"""Turns at contested inboxes, against a real Redis (one server and a 3-master Redis Cluster): a writer
asks Redis only about inboxes another node wrote or lost a race for, and then waits its turn."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from im.cluster.news import decode_heads
from im.cluster.redis_keys import RedisKeys
from im.delivery.leases import RedisLeases
from tests.cluster.procs import AnyRedisServer, RedisServer, command_calls


def client(server: AnyRedisServer) -> Any:
    return Redis.from_url(server.url) if isinstance(server, RedisServer) else RedisCluster.from_url(server.url)


@pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)
async def test_only_contested_inboxes_are_asked_about_and_their_turns_are_kept(redis_server: AnyRedisServer) -> None:
    keys = RedisKeys()
    redis_a, redis_b = client(redis_server), client(redis_server)
    a, b = RedisLeases(redis_a, keys, "a"), RedisLeases(redis_b, keys, "b")
    listener = Redis.from_url(redis_server.url if isinstance(redis_server, RedisServer) else redis_server.urls[0])
    pubsub = listener.pubsub()
    await pubsub.subscribe(keys.heads_channel)
    await pubsub.get_message(timeout=1)  # the subscription's confirmation
    try:
        await b.take(["bob"])  # b lost a race for bob's inbox: bob's turn is b's for LEASE_SECS
        # b says so to every node, as the bus carries it.
        said = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert said is not None and decode_heads(json.loads(said["data"])).contested == ["bob"]

        # Node a has not heard of it: it writes bob and carol without asking Redis.
        before = await command_calls(redis_server, "get")
        await a.wait_turn(["bob", "carol"])
        assert await command_calls(redis_server, "get") == before

        # Once told (the bus delivers b's message), a waits for b's turn on bob, and asks about bob only.
        a.others_write(["bob"])
        waited = asyncio.create_task(a.wait_turn(["bob", "carol"]))
        await asyncio.sleep(0.02)
        assert not waited.done()  # b still holds bob
        await b.release(["bob"])
        await asyncio.wait_for(waited, 1)
        assert await command_calls(redis_server, "get") > before
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await redis_a.aclose()
        await redis_b.aclose()
