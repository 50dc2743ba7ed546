"""The ``redis_server`` fixture's "cluster" kind is a real 3-master Redis Cluster: keys spread over the
masters, hash-tagged multi-key commands work, and a classic PUBLISH reaches a subscriber through the
cluster client's pubsub whatever node either is on."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from tests.cluster.procs import RedisClusterServers
from tests.helpers import eventually

MESSAGE_TIMEOUT_SECS = 10.0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("redis_server", ["cluster"], indirect=True)
async def test_cluster_fixture_is_a_three_master_cluster(redis_server: RedisClusterServers) -> None:
    assert redis_server.kind == "cluster"
    assert len(set(redis_server.ports)) == 3
    client = RedisCluster.from_url(redis_server.url)
    try:
        await client.initialize()
        primaries = client.get_primaries()
        assert len(client.get_nodes()) == 3
        assert len(primaries) == 3
        assert sorted(node.port for node in primaries) == sorted(redis_server.ports)

        keys = [chr(c) for c in range(ord("a"), ord("z") + 1)]
        for key in keys:
            await client.set(key, f"value-{key}")
        assert [await client.get(key) for key in keys] == [f"value-{key}".encode() for key in keys]
        owners = {client.get_node_from_key(key).port for key in keys}
        assert len(owners) == 3, f"26 keys all on {owners}: the slots are not spread over the masters"
        # Each key really lives on its slot's master, not behind some proxy.
        for key in keys[:6]:
            node = client.get_node_from_key(key)
            direct = Redis(host=node.host, port=node.port)
            try:
                assert await direct.get(key) == f"value-{key}".encode()
            finally:
                await direct.aclose()

        tagged = {f"{{t}}:{i}": f"tagged-{i}" for i in range(1, 5)}
        await client.mset_nonatomic(tagged)
        assert await client.execute_command("MGET", *tagged) == [v.encode() for v in tagged.values()]
        assert await client.mget(*tagged) == [v.encode() for v in tagged.values()]
    finally:
        await client.aclose()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("redis_server", ["cluster"], indirect=True)
async def test_cluster_publish_on_any_node_reaches_a_cluster_pubsub(redis_server: RedisClusterServers) -> None:
    client = RedisCluster.from_url(redis_server.url)
    pubsub = client.pubsub()
    channel = "im:notify:fixture-check"
    try:
        await pubsub.subscribe(channel)
        counts = await eventually(lambda: redis_server.subscribers(channel),
                                  until=lambda c: c == {channel: 1}, timeout_secs=MESSAGE_TIMEOUT_SECS,
                                  what="one subscriber over the whole cluster")
        assert counts == {channel: 1}
        subscribed_on = pubsub.get_pubsub_node()

        # Publish from every node with a plain (non-cluster) client: classic pub/sub crosses the bus.
        for port in redis_server.ports:
            publisher = Redis(host="127.0.0.1", port=port)
            try:
                await publisher.publish(channel, f"from-{port}")
            finally:
                await publisher.aclose()

        received: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + MESSAGE_TIMEOUT_SECS
        while len(received) < len(redis_server.ports):
            assert asyncio.get_running_loop().time() < deadline, (
                f"only {received} within {MESSAGE_TIMEOUT_SECS:g} s (subscribed on {subscribed_on})")
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None and message["type"] == "message":
                assert message["channel"] == channel.encode()
                received.append(message["data"])
        assert sorted(received) == sorted(f"from-{port}".encode() for port in redis_server.ports)
    finally:
        await pubsub.aclose()
        await client.aclose()
