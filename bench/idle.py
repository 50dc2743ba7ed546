"""The idle-connections scenario, orchestrated: several load-generator workers hold the clients while
this process reads the server's RSS and connections between the phases (all WebSocket clients, then
all long-poll clients, then everyone leaves)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.loadgen import CONNECT_CONCURRENCY
from bench.procs import REPO_ROOT, client_connections, fd_count, python_module, rss_kb

__all__ = ["IdleWorkers", "measure_idle"]

# One worker process per this many clients: a single process cannot answer the pings of 15,000 SDK
# clients in time (measured: WebSockets dropped while long-polls connected from the same process).
CLIENTS_PER_WORKER = 4000
# Connected clients may fall this short of the target before a phase counts as done (a few slow ones).
PARKED_SHARE = 0.99


class IdleWorkers:
    def __init__(self, specs: Sequence[dict[str, Any]], *, log_dir: Path) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for index, spec in enumerate(specs):
            with open(log_dir / f"im-idle-{index}.log", "ab") as log_file:
                proc = subprocess.Popen(
                    python_module("bench.loadgen"),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    cwd=REPO_ROOT,
                    env=env,
                    text=True,
                    start_new_session=True,
                )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(spec) + "\n")
            proc.stdin.flush()
            self.procs.append(proc)

    def command(self, command: str, *, timeout_secs: float) -> list[dict[str, Any]]:
        """Send ``command`` to every worker at once and collect their JSON answers."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
        deadline = time.monotonic() + timeout_secs
        replies = []
        for proc in self.procs:
            assert proc.stdout is not None
            while True:
                ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise RuntimeError(f"idle worker {proc.pid} did not finish {command!r} in time")
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"idle worker {proc.pid} exited during {command!r}")
                if line.startswith("{") and '"done"' in line:
                    replies.append(json.loads(line))
                    break
        return replies

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _reading(pid: int, port: int) -> dict[str, int]:
    return {"rss_kb": rss_kb(pid), "fds": fd_count(pid), "clients": client_connections(pid, port)}


def _wait_clients(
    pid: int, port: int, *, at_least: int | None = None, at_most: int | None = None, timeout_secs: float
) -> float:
    """Poll the server's client connections until they cross a bound; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_secs:
        count = client_connections(pid, port)
        if (at_least is None or count >= at_least) and (at_most is None or count <= at_most):
            break
        time.sleep(0.2)
    return time.monotonic() - started


def measure_idle(
    clients: Sequence[dict[str, Any]],
    *,
    url: str,
    pid: int,
    port: int,
    log_dir: Path,
    settle_secs: float,
    connect_timeout_secs: float,
) -> dict[str, Any]:
    n_ws = sum(1 for c in clients if c["transport"] == "ws")
    n_lp = len(clients) - n_ws
    workers_needed = max(1, -(-len(clients) // CLIENTS_PER_WORKER))
    shares = [list(clients[i::workers_needed]) for i in range(workers_needed)]
    before = _reading(pid, port)
    # The connect rate is the same whatever the number of workers: they share one concurrency budget
    # (four workers at full concurrency each overran the store: its pool paused on 10 s timeouts).
    concurrency = max(1, CONNECT_CONCURRENCY // workers_needed)
    workers = IdleWorkers(
        [
            {
                "scenario": "idle_worker",
                "target": "im",
                "url": url,
                "clients": share,
                "connect_concurrency": concurrency,
            }
            for share in shares
        ],
        log_dir=log_dir,
    )
    try:
        started = time.monotonic()
        ws_replies = workers.command("ws", timeout_secs=connect_timeout_secs)
        ws_secs = time.monotonic() - started
        time.sleep(settle_secs)
        with_ws = _reading(pid, port)
        started = time.monotonic()
        workers.command("lp", timeout_secs=connect_timeout_secs)
        _wait_clients(
            pid,
            port,
            at_least=before["clients"] + int((n_ws + n_lp) * PARKED_SHARE),
            timeout_secs=connect_timeout_secs,
        )
        lp_secs = time.monotonic() - started
        time.sleep(settle_secs)
        with_all = _reading(pid, port)
        started = time.monotonic()
        leave = workers.command("leave", timeout_secs=connect_timeout_secs)
        leave_secs = _wait_clients(pid, port, at_most=before["clients"], timeout_secs=60) + (
            time.monotonic() - started
        )
        time.sleep(settle_secs)
        after = _reading(pid, port)
    finally:
        workers.close()
    return {
        "ws": n_ws,
        "longpoll": n_lp,
        "workers": workers_needed,
        "connect_error_count": sum(r["errors"] for r in leave),
        "connect_errors": [e for r in ws_replies + leave for e in r["error_samples"]][:5],
        "client_reconnects": sum(r["reconnects"] for r in leave),
        "before": before,
        "with_ws": with_ws,
        "with_all": with_all,
        "after": after,
        "ws_connect_secs": ws_secs,
        "lp_connect_secs": lp_secs,
        "leave_secs": leave_secs,
        "loadgen_rss_delta_kb": sum(r["rss_delta_kb"] for r in leave),
    }
