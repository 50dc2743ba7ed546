"""Small helpers for the child processes the project starts (the embedded store, test and bench
servers): is a port listening, and stop a process politely, then firmly."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess

__all__ = ["port_open", "stop_process"]

log = logging.getLogger(__name__)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_process(
    process: subprocess.Popen[bytes] | None, *, timeout_secs: float, name: str = "child"
) -> None:
    """SIGTERM, wait up to ``timeout_secs``, then SIGKILL; nothing to do if it already exited."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_secs)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0f s; killing it", name, timeout_secs)
        process.kill()
        process.wait()
