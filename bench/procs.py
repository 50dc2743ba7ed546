"""Processes of the benchmark: the server under test, baseline servers, load generators, /proc readings.

Every process the benchmark starts is started here, in its own session, and stopped by its own pid;
nothing is ever killed by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from im.storage.childproc import port_open

__all__ = [
    "Proc",
    "client_connections",
    "cpu_readings",
    "cpu_secs",
    "cpu_spent",
    "fd_count",
    "python_module",
    "raise_nofile_limit",
    "rss_kb",
    "run_json",
    "run_json_many",
    "running",
    "wait_for_port",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
# A server that does not listen within this time has failed to start (the store starts in ~1 s).
START_TIMEOUT_SECS = 60.0
STOP_TIMEOUT_SECS = 20.0


def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard one (children inherit it); return the new soft limit.

    10,000 WebSocket + 5,000 long-poll connections need ~15,000 descriptors on each side.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, from /proc/<pid>/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_secs(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def cpu_readings(pids: Mapping[str, int]) -> dict[str, float]:
    """``cpu_secs`` of each named process that is still there (a gone one is left out, not zero)."""
    readings = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            readings[name] = cpu_secs(pid)
    return readings


def cpu_spent(before: Mapping[str, float], pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds each named process used since ``before`` (a ``cpu_readings``)."""
    after = cpu_readings(pids)
    return {name: after[name] - before[name] for name in after if name in before}


def wait_for_port(
    port: int,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    host: str = "127.0.0.1",
    timeout_secs: float = START_TIMEOUT_SECS,
) -> None:
    deadline = time.monotonic() + timeout_secs
    while not port_open(host, port):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with code {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listened on {host}:{port} within {timeout_secs:.0f} s")
        time.sleep(0.05)


class Proc:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self, name: str, command: Sequence[str], *, log_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(self.log_path, "ab") as log_file:
            self.popen = subprocess.Popen(
                list(command),
                cwd=REPO_ROOT,
                env=full_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(STOP_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextlib.contextmanager
def running(proc: Proc) -> Iterator[Proc]:
    try:
        yield proc
    finally:
        proc.stop()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def run_json(
    module: str, spec: Mapping[str, Any], *, timeout_secs: float, log_dir: Path, name: str
) -> dict[str, Any]:
    """Run ``python -m module`` with ``spec`` as JSON on stdin; return the JSON object it prints last.

    Load generators and the store baseline run this way: each in its own process and event loop, so
    the orchestrator's own work never competes with a measurement on the same loop.
    """
    return run_json_many(module, [spec], timeout_secs=timeout_secs, log_dir=log_dir, name=name)[0]


def run_json_many(
    module: str, specs: Sequence[Mapping[str, Any]], *, timeout_secs: float, log_dir: Path, name: str
) -> list[dict[str, Any]]:
    """Run one ``python -m module`` process per spec, all at once; return their JSON results in order."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for index, spec in enumerate(specs):
            log_path = log_dir / f"{name}-{index}.log"
            with open(log_path, "ab") as log_file:
                child = subprocess.Popen(
                    python_module(module),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    cwd=REPO_ROOT,
                    env=env,
                    start_new_session=True,
                )
            assert child.stdin is not None
            child.stdin.write(json.dumps(spec).encode())
            child.stdin.close()
            child.stdin = None  # communicate() must not touch it again
            started.append((child, log_path))
        deadline = time.monotonic() + timeout_secs
        results: list[dict[str, Any]] = []
        for child, log_path in started:
            assert child.stdout is not None
            try:
                out, _ = child.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"{name}: {module} did not finish within {timeout_secs:.0f} s; see {log_path}"
                ) from None
            lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
            if child.returncode != 0 or not lines:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} ({module}) exited with code {child.returncode}:\n{tail}")
            results.append(json.loads(lines[-1]))
        return results
    finally:
        for child, _ in started:
            if child.poll() is None:
                child.kill()
                child.wait()


def client_connections(pid: int, port: int) -> int:
    """Established TCP connections of ``pid`` whose local port is ``port``: the clients a server holds.

    Counted from /proc/<pid>/net/tcp{,6}, keeping only sockets that ``pid`` owns (its fds), so the
    store connections and the listening socket are not counted.
    """
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    if local_port == port and fields[3] == "01" and fields[9] in inodes:
                        count += 1
        except OSError:
            continue
    return count
