"""The one-command local cluster (scripts/cluster.py): nginx + 3 nodes + Redis + SecantusDB, end to end."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from im.storage.embedded import free_port
from tests.cluster.exchange import POLL_TIMEOUT_SECS
from tests.cluster.procs import ROOT, RemoteNode

# scripts/ is not a package: load the command's module from its file.
_spec = importlib.util.spec_from_file_location("cluster_script", ROOT / "scripts" / "cluster.py")
assert _spec is not None and _spec.loader is not None
cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cluster)

pytestmark = pytest.mark.skipif(cluster.nginx_binary() is None,
                                reason="nginx is not installed (scripts/install-system-deps.sh installs it)")


def run(command: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IM_")}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "cluster.py"), command, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)


def test_nginx_config_upgrades_websockets_and_outlasts_long_polls(tmp_path: Path) -> None:
    text = cluster.render_nginx_conf(prefix=tmp_path, listen_port=8080, node_ports=[8881, 8882, 8883])
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header Connection $connection_upgrade;" in text
    assert text.count("server 127.0.0.1:888") == 3
    assert cluster.NGINX_READ_TIMEOUT_SECS > 60  # the longest long-poll the server allows
    assert "{{" not in text
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    for sub in ("logs", "tmp"):
        (tmp_path / sub).mkdir()
    check = subprocess.run([cluster.nginx_binary() or "nginx", "-t", "-p", str(tmp_path), "-c", str(conf),
                            "-e", str(tmp_path / "logs" / "error.log")],
                           capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stderr


async def test_cluster_command_starts_serves_across_nodes_and_stops(tmp_path: Path) -> None:
    base = tmp_path / "cluster"
    ports = {"--port": free_port(), "--node-port": free_port(), "--redis-port": free_port(),
             "--mongo-port": free_port()}
    # Nodes take consecutive ports: make sure the ones after --node-port are free too.
    while not all(_free(ports["--node-port"] + i) for i in range(3)):
        ports["--node-port"] = free_port()
    args = ["--dir", str(base), *(f"{k}={v}" for k, v in ports.items()),
            "--env", "IM_RATE_IP_PER_SEC=1000000", "--env", "IM_RATE_IP_BURST=1000000",
            "--env", "IM_RATE_DEVICE_PER_SEC=0",
            "--env", "IM_RATE_REGISTER_PER_SEC=0", "--env", "IM_RATE_LOGIN_PER_SEC=0"]
    started = await asyncio.to_thread(run, "start", args)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        state = json.loads((base / "cluster.json").read_text())
        assert set(state["pids"]) == {"secantus", "redis", "node1", "node2", "node3", "nginx"}
        lb = RemoteNode(ports["--port"])
        try:
            x = await lb.user("xavier")
            y = await lb.user("yvonne")
            async with lb.ws(x) as x_ws:  # the WebSocket upgrade goes through nginx
                poll = asyncio.ensure_future(lb.poll(y, after=0, timeout=POLL_TIMEOUT_SECS))
                await asyncio.sleep(0.5)
                sent = await x_ws.send("yvonne", "through nginx")
                assert sent["t"] == "sent"
                response = await asyncio.wait_for(poll, POLL_TIMEOUT_SECS - 25)
                assert [m["body"] for m in response.body["messages"]] == ["through nginx"]
                assert (await lb.send(y, "xavier", "and back")).status == 201
                bodies: list[str] = []
                while "and back" not in bodies:  # X's own message notifies X too; wait for Y's
                    await x_ws.notify(timeout=20)
                    bodies = [m["body"] for m in (await x_ws.pull(after=0))["messages"]]
                assert bodies == ["through nginx", "and back"]
        finally:
            await lb.stop()
    finally:
        stopped = await asyncio.to_thread(run, "stop", ["--dir", str(base)])
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for name, pid in state["pids"].items():
        assert not cluster._alive(pid), f"{name} still running"
    assert not (base / "cluster.json").exists()


def _free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
