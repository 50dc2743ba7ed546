"""Real processes for cluster tests: redis-server and im-server nodes (``python server.py``).

Nothing is faked: each node is the production entry point in its own process, sharing the session's
SecantusDB (its own database per test) and one redis-server; tests reach them over loopback HTTP and
WebSocket like any client.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from im.storage import childproc
from im.storage.childproc import stop_process
from tests.conftest import TEST_JWT_SECRET
from tests.helpers import Node

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECS = 90.0
STOP_TIMEOUT_SECS = 30.0
# Loopback tests send hundreds of messages from one address and user: the abuse limits are lifted.
UNLIMITED_ENV = {
    "IM_RATE_IP_PER_SEC": "1000000", "IM_RATE_IP_BURST": "1000000",
    "IM_RATE_SEND_PER_SEC": "1000000", "IM_RATE_SEND_BURST": "1000000",
}


def port_open(port: int) -> bool:
    return childproc.port_open("127.0.0.1", port)


def wait_for(predicate: Any, what: str, timeout: float = START_TIMEOUT_SECS, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:.0f} s")
        time.sleep(interval)


class RedisServer:
    """One redis-server with nothing persisted; ``stop``/``start`` keep the port (restart test)."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def subscribers(self, *channels: str) -> dict[str, int]:
        """How many clients are subscribed to each of ``channels`` (PUBSUB NUMSUB)."""
        check = Redis.from_url(self.url)
        try:
            return {name.decode(): count for name, count in await check.pubsub_numsub(*channels)}
        finally:
            await check.aclose()

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (scripts/install-system-deps.sh installs it)"
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        wait_for(lambda: port_open(self.port), "redis-server listening")
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process, timeout_secs=STOP_TIMEOUT_SECS, name=type(self).__name__)


class NodeProcess:
    """``python server.py --port P --node-id ID --redis-url URL`` with settings from the environment."""

    def __init__(self, node_id: str, port: int, env: dict[str, str], workdir: Path) -> None:
        self.node_id = node_id
        self.port = port
        self.env = env
        self.log_path = workdir / f"{node_id}.log"
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.client = RemoteNode(port)

    def start(self) -> NodeProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--port", str(self.port), "--node-id", self.node_id],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        wait_for(self._healthy, f"{self.node_id} healthy")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.node_id} exited at start:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=3) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process, timeout_secs=STOP_TIMEOUT_SECS, name=type(self).__name__)

    def kill(self) -> None:
        """SIGKILL, as a crash: the node cannot deregister, its presence must expire by TTL."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


class RemoteNode(Node):
    """The test HTTP/WebSocket client of tests.helpers, pointed at a node in another process."""

    def __init__(self, port: int) -> None:
        super().__init__(None, None, port)  # type: ignore[arg-type]

    async def stop(self) -> None:
        self.http.close()


def node_env(*, mongo_url: str, db_name: str, redis_url: str, data_dir: Path, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IM_")}
    env.update(UNLIMITED_ENV)
    env.update({
        "IM_MONGO_URL": mongo_url, "IM_MONGO_DB": db_name, "IM_REDIS_URL": redis_url,
        "IM_JWT_SECRET": TEST_JWT_SECRET, "IM_WRITE_CONCERN": "1", "IM_DATA_DIR": str(data_dir),
        # Nodes share the database, so they share the master key that wraps its data keys.
        "IM_MASTER_KEY": "test-master-key-" + "m" * 32,
    })
    env.update({"IM_" + name.upper(): str(value) for name, value in settings.items()})
    return env
