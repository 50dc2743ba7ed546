"""Fixtures: a real Redis per test (one redis-server, or a 3-master Redis Cluster) and a factory of
real node processes (``server.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from im.storage.embedded import EmbeddedMongo, free_port
from tests.cluster.procs import (
    AnyRedisServer,
    NodeProcess,
    RedisClusterServers,
    RedisServer,
    cluster_ports,
    node_env,
)

StartNodes = Callable[..., list[NodeProcess]]
REDIS_KINDS = ("single", "cluster")
CLUSTER_MASTERS = 3


@pytest.fixture
def redis_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyRedisServer]:
    """One redis-server by default; ``@pytest.mark.parametrize("redis_server", ["single", "cluster"],
    indirect=True)`` runs a test on each kind ("cluster": 3 masters, no replicas, on loopback)."""
    kind = getattr(request, "param", "single")
    server: AnyRedisServer
    if kind == "single":
        server = RedisServer(free_port(), tmp_path / "redis")
    elif kind == "cluster":
        server = RedisClusterServers(cluster_ports(CLUSTER_MASTERS), tmp_path / "redis-cluster")
    else:
        raise ValueError(f"redis_server: unknown kind {kind!r}, expected one of {REDIS_KINDS}")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_nodes(mongo: EmbeddedMongo, db_name: str, redis_server: AnyRedisServer, tmp_path: Path,
                ) -> Iterator[StartNodes]:
    """``start_nodes(n, **settings)`` starts n nodes (node1..) on one database and Redis."""
    started: list[NodeProcess] = []

    def start(count: int, **settings: Any) -> list[NodeProcess]:
        nodes = []
        for _ in range(count):
            node_id = f"node{len(started) + 1}"
            if redis_server.kind == "cluster":
                settings.setdefault("redis_cluster", "1")
            env = node_env(mongo_url=mongo.url, db_name=db_name, redis_url=redis_server.url,
                           data_dir=tmp_path / node_id, **settings)
            node = NodeProcess(node_id, free_port(), env, tmp_path / "logs")
            started.append(node)
            nodes.append(node.start())
        return nodes

    try:
        yield start
    finally:
        for node in reversed(started):
            node.stop()
            node.client.http.close()
