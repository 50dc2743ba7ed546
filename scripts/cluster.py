#!/usr/bin/env python3
"""Run a local cluster on loopback ports: SecantusDB, redis-server, N im-server nodes and nginx.

    .venv/bin/python scripts/cluster.py start     # http://127.0.0.1:8080 (nginx), nodes on 8881..
    .venv/bin/python scripts/cluster.py status
    .venv/bin/python scripts/cluster.py stop

Every piece runs as its own process with its log under ``--dir`` (default ``data/cluster``); the pids
are kept in ``cluster.json`` there, so ``stop`` works from another shell. The store's data and the
shared JWT secret stay in the directory between runs; Redis keeps nothing (presence is rebuilt by the
nodes' heartbeats).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from im.storage.embedded import EmbeddedMongo  # noqa: E402 - after the sys.path line above

TEMPLATE = ROOT / "deploy" / "nginx.conf.template"
STATE_FILE = "cluster.json"
# Nodes and nginx answer /healthz within this time on a loaded 2-core machine.
START_TIMEOUT_SECS = 90.0
# A node drains its connections for up to 5 s at SIGTERM; SecantusDB flushes in about 2 s.
STOP_TIMEOUT_SECS = 30.0
# Longer than the longest long-poll (60 s) plus the node's own grace.
NGINX_READ_TIMEOUT_SECS = 90


def render_nginx_conf(*, prefix: Path, listen_port: int, node_ports: list[int]) -> str:
    """The nginx config for these ports; ``user`` is set only when running as root (workers need to
    write the temp directories that this user owns)."""
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in node_ports)
    user_directive = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    text = TEMPLATE.read_text()
    for name, value in {
        "user_directive": user_directive, "prefix": str(prefix), "listen": f"127.0.0.1:{listen_port}",
        "servers": servers, "read_timeout_secs": str(NGINX_READ_TIMEOUT_SECS),
    }.items():
        text = text.replace("{{" + name + "}}", value)
    return text


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _spawn(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return process.pid


def _wait_until(check: Callable[[], bool], what: str, pid: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECS
    while not check():
        if not _alive(pid):
            raise RuntimeError(f"{what} exited at start; see {log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {START_TIMEOUT_SECS:.0f} s; see {log_path}")
        time.sleep(0.2)


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start(args: argparse.Namespace) -> int:
    base = Path(args.dir).resolve()
    state_path = base / STATE_FILE
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if any(_alive(pid) for pid in state["pids"].values()):
            print(f"cluster already running ({state['url']}); stop it first", file=sys.stderr)
            return 1
    nginx = nginx_binary()
    if nginx is None:
        print("nginx is not installed (Debian: apt-get install nginx)", file=sys.stderr)
        return 1
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("redis-server is not installed (Debian: apt-get install redis-server)", file=sys.stderr)
        return 1
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pids: dict[str, int] = {}
    state = {"url": f"http://127.0.0.1:{args.port}", "pids": pids, "dir": str(base)}

    def save() -> None:
        state_path.write_text(json.dumps(state, indent=2))

    try:
        # Outlives this launcher: `stop` ends it by the pid saved below.
        mongo = EmbeddedMongo(base / "mongo", port=args.mongo_port, log_path=logs / "secantus.log",
                              stop_with_parent=False).start()
        assert mongo.pid is not None
        pids["secantus"] = mongo.pid
        save()

        redis_dir = base / "redis"
        redis_dir.mkdir(exist_ok=True)
        pids["redis"] = _spawn([redis_server, "--port", str(args.redis_port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(redis_dir)],
                               logs / "redis.log")
        save()
        _wait_until(lambda: _port_open(args.redis_port), "redis-server", pids["redis"], logs / "redis.log")

        secret_path = base / "jwt_secret"
        if not secret_path.exists():
            secret_path.write_text(secrets.token_urlsafe(48))
            secret_path.chmod(0o600)
        # Every node wraps and unwraps the shared database's data keys with the same master key.
        master_key_path = base / "master_key"
        if not master_key_path.exists():
            master_key_path.write_text(secrets.token_urlsafe(32))
            master_key_path.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IM_")}
        env.update({"IM_MONGO_URL": mongo.url, "IM_MONGO_DB": args.db,
                    "IM_JWT_SECRET": secret_path.read_text(),
                    "IM_MASTER_KEY": master_key_path.read_text(),
                    "IM_REDIS_URL": f"redis://127.0.0.1:{args.redis_port}/0",
                    # The nodes only see nginx's address: per-address limits and logs need the client's,
                    # which nginx passes in X-Real-IP / X-Forwarded-For (nodes listen on loopback only).
                    "IM_TRUST_FORWARDED_HEADERS": "true"})
        env.update(dict(item.split("=", 1) for item in args.env))
        node_ports = [args.node_port + i for i in range(args.nodes)]
        for i, port in enumerate(node_ports, start=1):
            name = f"node{i}"
            node_env = {**env, "IM_DATA_DIR": str(base / name)}
            pids[name] = _spawn([sys.executable, str(ROOT / "server.py"), "--port", str(port),
                                 "--node-id", name], logs / f"{name}.log", node_env)
            save()
        for i, port in enumerate(node_ports, start=1):
            _wait_until(lambda port=port: _healthy(f"http://127.0.0.1:{port}/healthz"), f"node{i}",
                        pids[f"node{i}"], logs / f"node{i}.log")

        prefix = base / "nginx"
        for sub in ("logs", "tmp"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(render_nginx_conf(prefix=prefix, listen_port=args.port, node_ports=node_ports))
        pids["nginx"] = _spawn(
            [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs" / "error.log")],
            logs / "nginx.log",
        )
        save()
        _wait_until(lambda: _healthy(f"{state['url']}/healthz"), "nginx", pids["nginx"], logs / "nginx.log")
    except (RuntimeError, OSError) as exc:
        print(f"cluster start failed: {exc}", file=sys.stderr)
        stop(args)
        return 1
    print(f"cluster up: {state['url']} (nginx) -> nodes on "
          f"{', '.join(f'127.0.0.1:{p}' for p in node_ports)}; redis 127.0.0.1:{args.redis_port}; "
          f"SecantusDB {mongo.url}; logs in {logs}")
    return 0


def stop(args: argparse.Namespace) -> int:
    base = Path(args.dir).resolve()
    state_path = base / STATE_FILE
    if not state_path.exists():
        print("no cluster state here; nothing to stop")
        return 0
    state = json.loads(state_path.read_text())
    # Front to back: nginx first (no new requests), then the nodes, Redis, and the store last.
    names = state["pids"]
    nodes = sorted(n for n in names if n.startswith("node"))
    order = [n for n in ("nginx", *nodes, "redis", "secantus") if n in names]
    for name in order:
        pid = state["pids"][name]
        if not _alive(pid):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECS
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            print(f"{name} (pid {pid}) ignored SIGTERM; killing it", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    state_path.unlink()
    print("cluster stopped")
    return 0


def status(args: argparse.Namespace) -> int:
    state_path = Path(args.dir).resolve() / STATE_FILE
    if not state_path.exists():
        print("not running")
        return 1
    state = json.loads(state_path.read_text())
    running = True
    for name, pid in state["pids"].items():
        alive = _alive(pid)
        running &= alive
        print(f"{name:10} pid {pid:<8} {'running' if alive else 'gone'}")
    print(f"{state['url']} {'healthy' if _healthy(state['url'] + '/healthz') else 'not answering'}")
    return 0 if running else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--dir", default=str(ROOT / "data" / "cluster"), help="state, data and logs")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--port", type=int, default=8080, help="nginx (the cluster's address)")
    parser.add_argument("--node-port", type=int, default=8881, help="first node's port; the others follow")
    parser.add_argument("--redis-port", type=int, default=6390)
    parser.add_argument("--mongo-port", type=int, default=27190)
    parser.add_argument("--db", default="im", help="database name")
    parser.add_argument("--env", action="append", default=[], metavar="IM_X=V",
                        help="extra setting for every node (repeatable)")
    args = parser.parse_args(argv)
    return {"start": start, "stop": stop, "status": status}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
