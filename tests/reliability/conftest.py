"""The fault suite reuses the cluster fixtures (real redis-server, real ``server.py`` node processes)."""

from tests.cluster.conftest import redis_server, start_nodes  # noqa: F401 - fixtures, imported to register them
