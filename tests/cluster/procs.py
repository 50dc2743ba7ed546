"""Real processes for cluster tests: redis-server (one, or a 3-master Redis Cluster) and im-server
nodes (``python server.py``).

Nothing is faked: each node is the production entry point in its own process, sharing the session's
SecantusDB (its own database per test) and one Redis (a single redis-server or a Redis Cluster); tests
reach them over loopback HTTP and WebSocket like any client.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from redis.asyncio import Redis

from im.storage import childproc
from im.storage.childproc import stop_process
from im.storage.embedded import free_port
from tests.conftest import TEST_JWT_SECRET
from tests.helpers import Node

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECS = 90.0
STOP_TIMEOUT_SECS = 30.0
# Loopback tests send hundreds of messages from one address and user: the abuse limits are lifted.
UNLIMITED_ENV = {
    "IM_RATE_IP_PER_SEC": "1000000", "IM_RATE_IP_BURST": "1000000", "IM_RATE_DEVICE_PER_SEC": "0",
    "IM_RATE_SEND_PER_SEC": "1000000", "IM_RATE_SEND_BURST": "1000000",
    "IM_RATE_REGISTER_PER_SEC": "0", "IM_RATE_LOGIN_PER_SEC": "0",
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

    kind: Literal["single"] = "single"

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

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing was persisted, so a later ``start`` is empty."""
        process, self.process = self.process, None
        _kill(process)


CLUSTER_BUS_PORT_OFFSET = 10000  # redis-server's cluster bus listens on port + 10000
CLUSTER_SLOTS = 16384
CLUSTER_NODE_TIMEOUT_MS = 2000
CLUSTER_CREATE_TIMEOUT_SECS = 60.0
CLUSTER_READY_TIMEOUT_SECS = 20.0
REDIS_CLI_TIMEOUT_SECS = 5.0


def _kill(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports P whose cluster bus ports P+10000 are free too."""
    ports: list[int] = []
    taken: set[int] = set()
    for _ in range(200 * count):
        if len(ports) == count:
            break
        port = free_port()
        bus = port + CLUSTER_BUS_PORT_OFFSET
        if bus > 65535 or {port, bus} & taken or not _port_free(bus):
            continue
        ports.append(port)
        taken.update((port, bus))
    if len(ports) < count:
        raise RuntimeError(f"no {count} free loopback ports with free cluster bus ports (found {ports})")
    return ports


class RedisClusterServers:
    """A Redis Cluster of ``len(ports)`` masters (3 by default, no replicas), nothing persisted.

    ``start`` launches one ``redis-server --cluster-enabled yes`` per port (each in its own directory
    under ``workdir``), the first time joins them with ``redis-cli --cluster create``, and waits until
    every node reports ``cluster_state:ok`` with all 16384 slots assigned. ``stop`` stops them all and
    keeps their ``nodes-P.conf``, so a later ``start`` brings the same cluster back on the same ports,
    empty (the restart tests). ``url`` is the first node: redis-py's ``RedisCluster.from_url``
    discovers the others.
    """

    kind: Literal["cluster"] = "cluster"

    def __init__(self, ports: Sequence[int], workdir: Path) -> None:
        if len(ports) < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self.ports = list(ports)
        self.workdir = workdir
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.created = False  # the slots are assigned; the nodes-P.conf files remember the cluster

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{port}/0" for port in self.ports]

    def node_dir(self, port: int) -> Path:
        return self.workdir / f"node-{port}"

    def config_file(self, port: int) -> Path:
        return self.node_dir(port) / f"nodes-{port}.conf"

    def log_path(self, port: int) -> Path:
        return self.node_dir(port) / "redis.log"

    async def subscribers(self, *channels: str) -> dict[str, int]:
        """How many clients are subscribed to each of ``channels``: PUBSUB NUMSUB summed over every
        node (a classic SUBSCRIBE lives on the one node its connection is on; PUBLISH reaches all)."""
        counts = dict.fromkeys(channels, 0)
        for url in self.urls:
            check = Redis.from_url(url)
            try:
                for name, count in await check.pubsub_numsub(*channels):
                    counts[name.decode()] = counts.get(name.decode(), 0) + int(count)
            finally:
                await check.aclose()
        return counts

    def start(self) -> RedisClusterServers:
        """Start every node and wait for a healthy cluster; on any failure stop them all and raise."""
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (scripts/install-system-deps.sh installs it)"
        try:
            for port in self.ports:
                self._start_node(binary, port)
            for port in self.ports:
                wait_for(lambda port=port: self._listening(port), f"redis-server (cluster) on {port} listening")
            if not self.created:
                self._create()
                self.created = True
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, binary: str, port: int) -> None:
        node_dir = self.node_dir(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        if not self.created:
            # Left by a start that failed before the cluster was made: begin from an empty node.
            self.config_file(port).unlink(missing_ok=True)
        log = open(self.log_path(port), "ab")  # noqa: SIM115 - handed to the child
        try:
            self.processes[port] = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(node_dir), "--cluster-enabled", "yes",
                 "--cluster-config-file", str(self.config_file(port)),
                 "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()

    def _listening(self, port: int) -> bool:
        process = self.processes.get(port)
        if process is None or process.poll() is not None:
            raise AssertionError(f"redis-server (cluster) on {port} exited at start:\n{self._log_tail(port)}")
        return port_open(port)

    def _log_tail(self, port: int, lines: int = 30) -> str:
        path = self.log_path(port)
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _redis_cli(self, *args: str, timeout: float = REDIS_CLI_TIMEOUT_SECS) -> subprocess.CompletedProcess[str]:
        binary = shutil.which("redis-cli")
        assert binary, "redis-cli is not installed (scripts/install-system-deps.sh installs it)"
        return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)

    def _create(self) -> None:
        args = ["--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas", "0", "--cluster-yes"]
        try:
            done = self._redis_cli(*args, timeout=CLUSTER_CREATE_TIMEOUT_SECS)
        except subprocess.TimeoutExpired as exc:
            output = _text(exc.stdout) + _text(exc.stderr)
            raise RuntimeError(f"redis-cli {' '.join(args)} did not finish within "
                               f"{CLUSTER_CREATE_TIMEOUT_SECS:.0f} s:\n{output}") from exc
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in _text(done.stdout):
            raise RuntimeError(f"redis-cli {' '.join(args)} failed (exit {done.returncode}):\n"
                               f"{_text(done.stdout)}{_text(done.stderr)}")

    def cluster_info(self, port: int) -> dict[str, str]:
        """CLUSTER INFO of one node (via redis-cli), as a dict; empty when it does not answer."""
        try:
            done = self._redis_cli("-h", "127.0.0.1", "-p", str(port), "cluster", "info")
        except subprocess.TimeoutExpired:
            return {}
        info = {}
        for line in done.stdout.splitlines():
            name, sep, value = line.strip().partition(":")
            if sep:
                info[name] = value
        return info

    def _ready(self) -> bool:
        for port in self.ports:
            self._listening(port)  # raises with the log if the node died
            info = self.cluster_info(port)
            if (info.get("cluster_state") != "ok"
                    or info.get("cluster_slots_assigned") != str(CLUSTER_SLOTS)
                    or info.get("cluster_slots_ok") != str(CLUSTER_SLOTS)
                    or info.get("cluster_known_nodes") != str(len(self.ports))):
                return False
        return True

    def _wait_ready(self) -> None:
        try:
            wait_for(self._ready, "Redis Cluster state ok with all slots assigned",
                     timeout=CLUSTER_READY_TIMEOUT_SECS, interval=0.2)
        except AssertionError as exc:
            states = {port: self.cluster_info(port) for port in self.ports}
            raise AssertionError(f"{exc}; CLUSTER INFO per node: {states}") from None

    def stop(self) -> None:
        """Stop every node (SIGTERM, bounded, then SIGKILL), whatever state ``start`` left them in."""
        processes, self.processes = self.processes, {}
        errors: list[BaseException] = []
        for port, process in processes.items():
            try:
                stop_process(process, timeout_secs=STOP_TIMEOUT_SECS, name=f"{type(self).__name__}:{port}")
            except BaseException as exc:  # stop the others first, then report
                errors.append(exc)
                _kill(process)
        if errors:
            raise errors[0]

    def kill(self) -> None:
        """SIGKILL every node, as a crash: the data is gone; a later ``start`` is the same cluster, empty."""
        processes, self.processes = self.processes, {}
        for process in processes.values():
            _kill(process)


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # redis-cli colours its [ERR]/[OK] lines even into a pipe


async def command_calls(server: AnyRedisServer, command: str) -> int:
    """How many times ``command`` (e.g. ``"get"``) was served so far, summed over every master."""
    urls = [server.url] if isinstance(server, RedisServer) else server.urls
    total = 0
    for url in urls:
        plain = Redis.from_url(url)
        try:
            stats = await plain.info("commandstats")
        finally:
            await plain.aclose()
        total += stats.get(f"cmdstat_{command}", {}).get("calls", 0)
    return total


def _text(output: str | bytes | None) -> str:
    if output is None:
        return ""
    return ANSI_ESCAPE.sub("", output.decode(errors="replace") if isinstance(output, bytes) else output)


AnyRedisServer = RedisServer | RedisClusterServers


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
        _kill(process)


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
