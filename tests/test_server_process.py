"""`python server.py` on embedded defaults: starts its own SecantusDB, serves, stops cleanly, keeps data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from im.storage.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]


def _call(port: int, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _start(data_dir: Path, port: int, **settings: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IM_")}
    env.update({f"IM_{name.upper()}": value for name, value in settings.items()})
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "server.py"), "--port", str(port), "--data-dir", str(data_dir)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    # Longer than the server itself waits for a previous store to release the data directory (60 s):
    # a store told to stop by a killed server may be slow to flush on a loaded machine, and then the
    # server's own error, not this deadline, should say so.
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        try:
            if _call(port, "GET", "/healthz")["status"] == "ok":
                return process
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
    process.kill()
    output = process.communicate(timeout=30)[0].decode()
    store_log = data_dir / "secantus.log"
    store_tail = store_log.read_text(errors="replace")[-3000:] if store_log.exists() else "(no store log)"
    raise AssertionError(f"server did not become healthy\n--- server output:\n{output}\n"
                         f"--- store log (tail):\n{store_tail}")


def _stop(process: subprocess.Popen[bytes]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output.decode()
    return output.decode()


def test_embedded_server_runs_restarts_and_keeps_messages(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    process = _start(data_dir, port)
    try:
        assert (data_dir / "jwt_secret").exists()  # no secret configured: one was generated and kept
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200 and b"<!doctype html" in response.read().lower()
        for user in ("alice", "bob"):
            _call(port, "POST", "/api/v1/users", {"user": user, "password": "long password"})
        token = _call(port, "POST", "/api/v1/tokens", {"user": "alice", "password": "long password"})["token"]
        _call(port, "POST", "/api/v1/messages", {"to": "bob", "body": "survive me", "client_msg_id": "1"}, token)
    finally:
        output = _stop(process)
    assert "generated one into" in output  # the server says it generated the JWT secret
    assert ", uvloop)" in output  # the default loop, installed with the server

    # The same data on asyncio's own loop (IM_EVENT_LOOP=asyncio, for where uvloop is not wanted).
    process = _start(data_dir, port, event_loop="asyncio")
    try:
        bob = _call(port, "POST", "/api/v1/tokens", {"user": "bob", "password": "long password"})["token"]
        assert _call(port, "GET", "/api/v1/inbox?after=0", token=bob)[
            "messages"][0]["body"] == "survive me"
        # The token issued before the restart is still valid: the generated secret was kept.
        assert _call(port, "GET", "/api/v1/inbox?after=0", token=token)["head"] == 1
    finally:
        output = _stop(process)
    assert ", asyncio)" in output


def test_a_killed_server_restarts_without_losing_or_reusing_a_seq(tmp_path: Path) -> None:
    """kill -9 right after acknowledged sends (a single node saves inbox heads after the fact, every
    5 s): the restarted node finds every stored message and goes on from the true head."""
    data_dir, port = tmp_path / "data", free_port()
    process = _start(data_dir, port)
    try:
        for user in ("alice", "bob"):
            _call(port, "POST", "/api/v1/users", {"user": user, "password": "long password"})
        token = _call(port, "POST", "/api/v1/tokens", {"user": "alice", "password": "long password"})["token"]
        sent = [_call(port, "POST", "/api/v1/messages", {"to": "bob", "body": f"m{i}", "client_msg_id": str(i)},
                      token)["seq"] for i in range(3)]
        assert sent == [1, 2, 3]
    finally:
        process.kill()
        process.communicate(timeout=60)

    process = _start(data_dir, port)
    try:
        bob = _call(port, "POST", "/api/v1/tokens", {"user": "bob", "password": "long password"})["token"]
        page = _call(port, "GET", "/api/v1/inbox?after=0", token=bob)
        assert [m["body"] for m in page["messages"]] == ["m0", "m1", "m2"] and page["head"] == 3
        again = _call(port, "POST", "/api/v1/messages", {"to": "bob", "body": "m3", "client_msg_id": "3"}, token)
        assert again["seq"] == 4
    finally:
        _stop(process)
