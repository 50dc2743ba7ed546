"""The idle-connections scenario, orchestrated: several load-generator workers hold the clients while
this process reads the server's RSS and connections between the phases (all WebSocket clients, then
all long-poll clients, then everyone leaves)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
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
# After the clients left: how long to wait for the server's descriptors to be back to where they were.
# The store driver closes connections unused for IM_MONGO_MAX_IDLE_SECS (30 s by default) and prunes
# about once a second; the burst of logins opened up to its pool size (100).
DESCRIPTORS_BACK_TIMEOUT_SECS = 75.0


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


def server_metrics(url: str) -> dict[str, float]:
    """The server's own gauges from ``/metrics``: parked long-polls and connections by transport.

    Why: a TCP connection on the server's port is not a parked long-poll (a poll between two requests,
    or one still pulling, has a socket too); ``im_long_poll_waiters`` is what the server holds waiting.
    """
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except (OSError, urllib.error.URLError):
        return {}
    wanted = {
        "im_long_poll_waiters": "lp_waiters",
        'im_connections{transport="ws"}': "ws",
        'im_connections{transport="longpoll"}': "longpoll",
        'im_write_queue{kind="send"}': "send_queue",
        'im_write_queue{kind="ack"}': "ack_queue",
    }
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            found[wanted[name]] = float(value)
    return found


def _reading(pid: int, port: int, url: str) -> dict[str, Any]:
    return {
        "rss_kb": rss_kb(pid),
        "fds": fd_count(pid),
        "clients": client_connections(pid, port),
        **server_metrics(url),
    }


def _wait_until(check: Callable[[], bool], *, timeout_secs: float, interval_secs: float = 0.2) -> float:
    """Poll ``check`` until it holds (or the timeout); return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_secs and not check():
        time.sleep(interval_secs)
    return time.monotonic() - started


class _MetricsTimeline:
    """The server's gauges and client connections once a second on a thread, for the report: shows
    whether long-polls really stay parked, and how fast they got there."""

    def __init__(self, url: str, pid: int, port: int) -> None:
        self.rows: list[dict[str, Any]] = []
        self._args = (url, pid, port)
        self._stop = threading.Event()
        self._started = time.monotonic()
        self.phase = "ws"
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        url, pid, port = self._args
        while not self._stop.wait(1.0):
            try:
                tcp = client_connections(pid, port)
            except OSError:
                continue
            row = {"t": round(time.monotonic() - self._started, 2), "phase": self.phase, "tcp": tcp}
            self.rows.append({**row, **server_metrics(url)})

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def measure_idle(
    clients: Sequence[dict[str, Any]],
    *,
    url: str,
    pid: int,
    port: int,
    log_dir: Path,
    settle_secs: float,
    hold_secs: float,
    connect_timeout_secs: float,
    poll_timeout_secs: int,
) -> dict[str, Any]:
    """Connect the WebSocket clients, then park the long-polls, hold, and let everyone leave.

    Each phase ends on the server's own count, not the clients': WebSockets on
    ``im_connections{transport="ws"}``, long-polls on ``im_long_poll_waiters`` (a TCP connection alone
    may be a poll between two requests, or one the server has not read yet). Reconnects are read after
    connecting and again after ``hold_secs`` idle, so churn while idle shows apart from connect trouble.
    """
    n_ws = sum(1 for c in clients if c["transport"] == "ws")
    n_lp = len(clients) - n_ws
    workers_needed = max(1, -(-len(clients) // CLIENTS_PER_WORKER))
    shares = [list(clients[i::workers_needed]) for i in range(workers_needed)]
    before = _reading(pid, port, url)
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
                "poll_timeout_secs": poll_timeout_secs,
            }
            for share in shares
        ],
        log_dir=log_dir,
    )
    timeline = _MetricsTimeline(url, pid, port)
    try:
        started = time.monotonic()
        ws_replies = workers.command("ws", timeout_secs=connect_timeout_secs)
        _wait_until(lambda: server_metrics(url).get("ws", 0) >= n_ws * PARKED_SHARE, timeout_secs=60)
        ws_secs = time.monotonic() - started
        time.sleep(settle_secs)
        with_ws = _reading(pid, port, url)
        timeline.phase = "lp"
        started = time.monotonic()
        lp_replies = workers.command("lp", timeout_secs=connect_timeout_secs)
        _wait_until(
            lambda: server_metrics(url).get("lp_waiters", 0) >= n_lp * PARKED_SHARE,
            timeout_secs=connect_timeout_secs,
        )
        lp_secs = time.monotonic() - started
        time.sleep(settle_secs)
        with_all = _reading(pid, port, url)
        timeline.phase = "hold"
        time.sleep(hold_secs)
        held = workers.command("stats", timeout_secs=60)
        after_hold = _reading(pid, port, url)
        timeline.phase = "leave"
        started = time.monotonic()
        leave = workers.command("leave", timeout_secs=connect_timeout_secs)
        _wait_until(lambda: client_connections(pid, port) <= before["clients"], timeout_secs=60)
        leave_secs = time.monotonic() - started
        time.sleep(settle_secs)
        after = _reading(pid, port, url)
        started = time.monotonic()
        _wait_until(lambda: fd_count(pid) <= before["fds"], timeout_secs=DESCRIPTORS_BACK_TIMEOUT_SECS,
                    interval_secs=0.5)
        fds_back_secs = time.monotonic() - started
        after_pool = _reading(pid, port, url)
    finally:
        timeline.stop()
        workers.close()
    return {
        "ws": n_ws,
        "longpoll": n_lp,
        "workers": workers_needed,
        "connect_concurrency": concurrency * workers_needed,
        "poll_timeout_secs": poll_timeout_secs,
        "hold_secs": hold_secs,
        "connect_error_count": sum(r["errors"] for r in leave),
        "connect_errors": [e for r in ws_replies + lp_replies + leave for e in r["error_samples"]][:5],
        "reconnects_after_ws": sum(r["reconnects"] for r in ws_replies),
        "reconnects_after_connect": sum(r["reconnects"] for r in lp_replies),
        "reconnects_after_hold": sum(r["reconnects"] for r in held),
        "client_reconnects": sum(r["reconnects"] for r in leave),
        "before": before,
        "with_ws": with_ws,
        "with_all": with_all,
        "after_hold": after_hold,
        "after": after,
        "after_pool": after_pool,
        "fds_back_secs": fds_back_secs,
        "fds_back_timeout_secs": DESCRIPTORS_BACK_TIMEOUT_SECS,
        "ws_connect_secs": ws_secs,
        "lp_connect_secs": lp_secs,
        "leave_secs": leave_secs,
        "loadgen_rss_delta_kb": sum(r["rss_delta_kb"] for r in leave),
        "timeline": timeline.rows,
    }
