"""Fixtures: one real SecantusDB process per test session, a fresh database and app per test.

The store is never mocked: it is the same SecantusDB the server embeds, started on a free loopback port
with a temporary data directory, and reached through the driver like any MongoDB.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from config import Settings, load_settings
from im.storage.embedded import EmbeddedMongo, free_port
from tests.helpers import Node, running_node

TEST_JWT_SECRET = "test-secret-" + "x" * 40
_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    """A SecantusDB server for the whole session (or IM_TEST_MONGO_URL's server when set)."""
    external = os.environ.get("IM_TEST_MONGO_URL")
    if external:
        yield _External(external)  # type: ignore[misc]
        return
    root = tmp_path_factory.mktemp("secantus")
    # No fsync per commit here: these tests check behaviour, not crash durability (the fault tests
    # start their own store with it on, as the server does by default).
    server = EmbeddedMongo(root / "data", log_path=root / "secantus.log", sync_on_commit=False).start()
    try:
        yield server
    finally:
        server.stop()


class _External:
    def __init__(self, url: str) -> None:
        self.url = url


@pytest.fixture
def db_name(request: pytest.FixtureRequest) -> str:
    """A database of its own for each test, so tests never see each other's data."""
    return next_db_name()


def next_db_name() -> str:
    """A database name no other test of this run uses (for tests that need several)."""
    return f"t{os.getpid()}_{next(_db_numbers)}"


def make_settings(mongo_url: str, db_name: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mongo_url": mongo_url,
        "mongo_db": db_name,
        "data_dir": str(data_dir),
        "jwt_secret": TEST_JWT_SECRET,
        "port": free_port(),
        "write_concern": "1",
        # Every test client comes from 127.0.0.1 and many send in bursts: the per-address rates (requests,
        # registrations, logins) and the per-user send rate are off unless a test turns them on
        # (tests/handlers/test_limits.py does).
        "rate_ip_per_sec": 0.0,
        "rate_device_per_sec": 0.0,
        "rate_send_per_sec": 0.0,
        "rate_register_per_sec": 0.0,
        "rate_login_per_sec": 0.0,
    }
    values.update(overrides)
    return load_settings(environ={}, **values)


@pytest.fixture
def settings(mongo: EmbeddedMongo, db_name: str, tmp_path: Path) -> Settings:
    return make_settings(mongo.url, db_name, tmp_path)


@pytest.fixture
async def node(settings: Settings) -> AsyncIterator[Node]:
    """A running server on a free port, talking to the session's SecantusDB."""
    async with running_node(settings) as running:
        yield running


@pytest.fixture
async def eager_trim_node(mongo: EmbeddedMongo, db_name: str, tmp_path: Path) -> AsyncIterator[Node]:
    """A node that trims on every acknowledgement (no trim interval): for tests of the floor itself."""
    async with running_node(make_settings(mongo.url, db_name, tmp_path, trim_interval_secs=0)) as running:
        yield running


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests import reliability_report

    reliability_report.write()
