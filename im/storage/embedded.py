"""The embedded store: a SecantusDB server run as a child process.

SecantusDB is GPL-2.0, so it is never imported: it runs as its own process and the server talks to it
over the MongoDB wire protocol through the driver, exactly as to a real ``mongod``. Tests use the same
class to start a throwaway store.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from im.storage.childproc import port_open, stop_process

__all__ = ["EmbeddedMongo", "free_port"]

log = logging.getLogger(__name__)

# SecantusDB starts in about a second on this machine kind; allow for a loaded CI machine.
START_TIMEOUT_SECS = 60.0
# It flushes WiredTiger on SIGTERM in about two seconds.
STOP_TIMEOUT_SECS = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedMongo:
    """Start, locate and stop one SecantusDB process with its data under ``storage_path``."""

    def __init__(self, storage_path: str | os.PathLike[str], *, port: int = 0, host: str = "127.0.0.1",
                 log_path: str | os.PathLike[str] | None = None, sync_on_commit: bool = True,
                 stop_with_parent: bool = True, standalone: bool = True) -> None:
        self.storage_path = Path(storage_path)
        self.host = host
        self.port = port or free_port(host)
        self.log_path = Path(log_path) if log_path else self.storage_path.parent / "secantus.log"
        self.sync_on_commit = sync_on_commit
        # False for a launcher that exits and leaves the store running (scripts/cluster.py).
        self.stop_with_parent = stop_with_parent
        # False advertises a single-node replica set (change streams need it; we use none).
        self.standalone = standalone
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        # retryWrites=false: with retryable writes SecantusDB's write rate decays as its retry records
        # grow; sends are idempotent through client_msg_id anyway.
        return f"mongodb://{self.host}:{self.port}/?directConnection=true&retryWrites=false"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> EmbeddedMongo:
        self.storage_path.mkdir(parents=True, exist_ok=True)
        _wait_until_released(self.storage_path / "WiredTiger.lock", START_TIMEOUT_SECS)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        interpreter = _tied_to_this_process() if self.stop_with_parent else [sys.executable]
        command = [
            *interpreter, "-m", "secantus", "--host", self.host, "--port", str(self.port),
            "--storage-path", str(self.storage_path), "--log-level", "WARNING",
        ]
        if self.sync_on_commit:
            # SecantusDB accepts j:true but, like mongod's default, does not fsync its log at commit
            # unless told to: without this a crash (even kill -9) loses acknowledged writes. Group
            # commit pays one fsync per batch (its cost: docs/performance.md).
            command.append("--sync-on-commit")
        if self.standalone:
            # Without the single-node replica-set advertisement SecantusDB keeps no oplog: no second
            # encode and write per stored document. Nothing here reads the oplog (no change streams;
            # nodes notify through Redis), and transactions work without it.
            command.append("--standalone")
        log.info("starting embedded SecantusDB on %s:%d with data in %s", self.host, self.port,
                 self.storage_path)
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while not port_open(self.host, self.port):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"SecantusDB exited with code {self._process.returncode} at start; see {self.log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SecantusDB did not listen on port {self.port} within "
                                   f"{START_TIMEOUT_SECS:.0f} s; see {self.log_path}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process, timeout_secs=STOP_TIMEOUT_SECS, name="SecantusDB")

    def kill(self) -> None:
        """SIGKILL, as a crash would (fault tests)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


# Run in the child before it becomes the store (argv: the server's pid, then the store's command line).
# It forks a watcher, then execs the store, keeping its pid. The watcher, a shell, polls the store's
# parent twice a second; once the server is gone (the store was handed to another parent), it sends
# the store one SIGTERM, so the store flushes and exits, and the watcher exits too. The watcher is
# SIGKILLed by the kernel when the store goes first (prctl PR_SET_PDEATHSIG = 1, kept across exec).
#
# Why not PR_SET_PDEATHSIG on the store itself: the signal comes each time the store's parent thread
# ends, and a killed server's threads end one by one, so the store would get SIGTERM several times in a
# row. SecantusDB's handler is not reentrant: a second SIGTERM inside the first deadlocks it, the store
# keeps the data directory locked, and the next start fails.
_WATCH_STORE = (
    'while read -r _ _ _ ppid _ < "/proc/$2/stat" && [ "$ppid" = "$1" ]; do sleep 0.5; done; '
    '[ -e "/proc/$2" ] && kill -TERM "$2"'
)
_TIE_TO_PARENT = (
    "import ctypes, os, signal, sys\n"
    "server, store = int(sys.argv[1]), os.getpid()\n"
    "if os.getppid() != server:\n"
    "    sys.exit(0)\n"
    "if os.fork() == 0:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "    if os.getppid() != store:\n"
    "        os._exit(0)\n"
    f"    os.execv('/bin/sh', ['sh', '-c', {_WATCH_STORE!r}, 'im-store-watch', str(server), str(store)])\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def _tied_to_this_process() -> list[str]:
    """The interpreter command line that starts the store so that it stops when this process dies,
    even by SIGKILL: an orphaned store keeps the data directory locked, and the next start fails
    ("WiredTiger database is already being managed by another process"). Linux only; elsewhere the
    store is started plainly."""
    if not sys.platform.startswith("linux"):
        return [sys.executable]
    return [sys.executable, "-c", _TIE_TO_PARENT, str(os.getpid())]


def _wait_until_released(lock_path: Path, timeout_secs: float) -> None:
    """Wait while another store process still holds the data directory (WiredTiger's fcntl lock): a
    store told to stop because its server died (see ``_tied_to_this_process``) may still be flushing
    when the server is started again."""
    if not lock_path.exists():
        return
    deadline = time.monotonic() + timeout_secs
    with open(lock_path, "rb+") as lock_file:
        while True:
            try:
                fcntl.lockf(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if time.monotonic() > deadline:
                    return  # the store's own start reports the busy directory
                log.info("waiting for a previous SecantusDB to release %s", lock_path.parent)
                time.sleep(0.2)
                continue
            fcntl.lockf(lock_file, fcntl.LOCK_UN)
            return
