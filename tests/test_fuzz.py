"""Property-based fuzzing of every WebSocket frame type and every HTTP endpoint (hypothesis).

The server runs as a real process. Random, truncated, oversized, wrongly-typed and deeply nested
payloads (JSON and msgpack) must only ever get clear 4xx / ``error`` replies: no 5xx, no stored change
beyond what a valid request did, the server alive, and the WebSocket that received them still healthy.
The number of cases tried is written to the reliability report (tests/reliability_report.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import tornado.websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient

from handlers.app import build_routes
from im.storage.embedded import free_port
from tests.conftest import TEST_JWT_SECRET
from tests.reliability_report import record

ROOT = Path(__file__).resolve().parents[1]
FUZZ_EXAMPLES = int(os.environ.get("IM_FUZZ_EXAMPLES", "300"))
COUNTED = ("users", "messages", "counters", "relations", "groups")

# -- strategies ---------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False), st.text(max_size=40), st.sampled_from(["bob", "alice", "", "0", "-1", "ü"]),
)
json_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner,
                                                                                    max_size=4)),
    max_leaves=12,
)
FIELD_NAMES = ["t", "to", "body", "client_msg_id", "after", "limit", "upto", "token", "rid", "kind", "group",
               "msg_ids", "user", "password", "device", "name", "members", "timeout"]
FRAME_TYPES = ["auth", "send", "pull", "ack", "ping", "read", "notify", "sent", "bogus", "", "SEND"]


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"k": value}
    return value


frames = st.one_of(
    st.fixed_dictionaries({"t": st.sampled_from(FRAME_TYPES)},
                          optional={name: json_values for name in FIELD_NAMES if name != "t"}),
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6),
    json_values,
    st.builds(lambda d: {"t": "send", "to": "bob", "body": _deep(d), "client_msg_id": "x"},
              st.integers(1, 200)),
)


def _encode(frame: Any, binary: bool) -> str | bytes:
    if binary:
        return msgpack.packb(frame, use_bin_type=True)
    return json.dumps(frame)


raw_payloads = st.one_of(
    st.tuples(frames, st.booleans()).map(lambda fb: _encode(*fb)),
    st.binary(max_size=300),
    st.text(max_size=300),
    st.tuples(frames, st.booleans(), st.integers(0, 50)).map(lambda t: _encode(t[0], t[1])[: t[2]]),  # truncated
    st.integers(70_000, 200_000).map(lambda n: json.dumps({"t": "ping", "pad": "x" * n})),  # oversized
)

# -- the server under test ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server(mongo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    port, db = free_port(), f"fuzz{os.getpid()}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("IM_")}, "IM_MONGO_URL": mongo.url,
           "IM_MONGO_DB": db, "IM_JWT_SECRET": TEST_JWT_SECRET, "IM_PORT": str(port),
           "IM_DATA_DIR": str(tmp_path_factory.mktemp("fuzz")), "IM_RATE_IP_PER_SEC": "0", "IM_RATE_DEVICE_PER_SEC": "0",
           "IM_RATE_SEND_PER_SEC": "0", "IM_RATE_REGISTER_PER_SEC": "0", "IM_RATE_LOGIN_PER_SEC": "0",
           "IM_LOGIN_MAX_FAILURES": "100000", "IM_LOG_LEVEL": "ERROR",
           "IM_WRITE_CONCERN": "1"}
    process = subprocess.Popen([sys.executable, str(ROOT / "server.py")], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2)
            break
        except (urllib.error.URLError, OSError):
            assert process.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
    tokens = {}
    for user in ("alice", "bob"):
        _http("POST", base + "/api/v1/users", json.dumps({"user": user, "password": "long password"}).encode())
        _, body = _http("POST", base + "/api/v1/tokens",
                             json.dumps({"user": user, "password": "long password"}).encode())
        tokens[user] = json.loads(body)["token"]
    database = MongoClient(mongo.url)[db]
    try:
        yield {"base": base, "port": port, "tokens": tokens, "db": database, "process": process}
    finally:
        database.client.close()
        process.terminate()
        _, stderr = process.communicate(timeout=30)
        assert b"Traceback" not in stderr, stderr.decode()[-3000:]


def _http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
          ) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _counts(db: Any) -> dict[str, int]:
    return {name: db[name].count_documents({}) for name in COUNTED}


# -- WebSocket ------------------------------------------------------------------------------------------


VALID_REPLIES = {"pong", "sent", "msgs", "acked", "auth", "read", "receipts", "error"}


def test_fuzz_websocket_frames(fuzz_server: dict[str, Any]) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # the client connection closes through the current loop
    url = f"ws://127.0.0.1:{fuzz_server['port']}/ws"

    async def connect() -> tornado.websocket.WebSocketClientConnection:
        conn = await tornado.websocket.websocket_connect(url)
        await conn.write_message(json.dumps({"t": "auth", "token": fuzz_server["tokens"]["alice"]}))
        assert json.loads(await conn.read_message())["ok"] is True
        return conn

    conn = loop.run_until_complete(connect())
    before = _counts(fuzz_server["db"])
    stats = {"cases": 0, "errors": 0, "accepted": 0, "sent": 0}

    async def exchange(payload: str | bytes) -> dict[str, Any]:
        await conn.write_message(payload, binary=isinstance(payload, bytes))
        while True:
            reply = await asyncio.wait_for(conn.read_message(), 30)
            assert reply is not None, f"socket closed after {payload[:80]!r}"
            frame = msgpack.unpackb(reply) if isinstance(reply, bytes) else json.loads(reply)
            if frame.get("t") != "notify":
                return frame

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(payload=raw_payloads)
    def fuzz(payload: str | bytes) -> None:
        reply = loop.run_until_complete(exchange(payload))
        stats["cases"] += 1
        assert reply.get("t") in VALID_REPLIES, reply
        if reply["t"] == "error":
            stats["errors"] += 1
            assert isinstance(reply.get("code"), str) and reply.get("message"), reply
        else:
            stats["accepted"] += 1
            stats["sent"] += reply["t"] == "sent" and not reply.get("duplicate")

    try:
        fuzz()
        assert loop.run_until_complete(exchange(json.dumps({"t": "ping"})))["t"] == "pong"  # still healthy
    finally:
        conn.close()
        loop.run_until_complete(asyncio.sleep(0.05))
        asyncio.set_event_loop(None)
        loop.close()
    after = _counts(fuzz_server["db"])
    assert after["messages"] - before["messages"] == stats["sent"]
    assert after["users"] == before["users"]
    assert fuzz_server["process"].poll() is None
    record("fuzz", "WebSocket frames (JSON + msgpack; random, truncated, oversized, nested)", stats)


# -- HTTP -----------------------------------------------------------------------------------------------


def _endpoints() -> list[str]:
    """Every API route of the app, with path parameters filled by a placeholder."""
    from config import load_settings

    paths = []
    for route in build_routes(None, load_settings(environ={})):  # type: ignore[arg-type]
        pattern = route[0].rstrip("$")
        if (pattern.startswith("/api/") and ".*" not in pattern) or pattern in ("/healthz",):
            paths.append(re.sub(r"\([^)]*\)", "FUZZID", pattern).replace("\\", ""))
    return sorted(set(paths))


ENDPOINTS = _endpoints()
http_bodies = st.one_of(
    st.none(), st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
    frames.map(lambda f: json.dumps(f).encode()),
    st.integers(1, 5).map(lambda k: b'{"body": "' + b"x" * (k * 70_000) + b'"}'),
)
path_ids = st.one_of(st.sampled_from(["bob", "alice", "0", "g:1", "d:alice:bob", "ffffffffffffffffffffffff"]),
                     st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789%:._-", min_size=1, max_size=30))


def test_fuzz_http_endpoints(fuzz_server: dict[str, Any]) -> None:
    assert "/api/v1/messages" in ENDPOINTS and "/api/v1/poll" in ENDPOINTS
    db = fuzz_server["db"]
    before = _counts(db)
    stats: dict[str, Any] = {"cases": 0, "endpoints": len(ENDPOINTS), "2xx": 0, "4xx": 0}
    created = {"messages": 0}

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(path=st.sampled_from(ENDPOINTS), path_id=path_ids,
           method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]), body=http_bodies,
           query=st.dictionaries(st.sampled_from(["after", "limit", "timeout", "before", "upto"]),
                                 st.one_of(st.integers(-5, 10**20).map(str), st.text(max_size=10)), max_size=3),
           auth=st.sampled_from(["alice", "none", "garbage"]))
    def fuzz(path: str, path_id: str, method: str, body: bytes | None, query: dict[str, str], auth: str) -> None:
        if path == "/api/v1/poll":
            query = {**query, "timeout": "0"}
        url = fuzz_server["base"] + path.replace("FUZZID", urllib.request.quote(path_id, safe=""))
        if query:
            url += "?" + "&".join(f"{k}={urllib.request.quote(v)}" for k, v in query.items())
        headers = {}
        if auth == "alice":
            headers["Authorization"] = f"Bearer {fuzz_server['tokens']['alice']}"
        elif auth == "garbage":
            headers["Authorization"] = "Bearer garbage"
        if method in ("GET", "DELETE") and body is not None:
            body = None
        if method in ("POST", "PUT", "PATCH") and body is None:
            body = b""
        if path == "/api/v1/tokens" and method == "DELETE":
            return  # logging alice out would only end the run early; covered by test_accounts
        status, raw = _http(method, url, body, headers)
        stats["cases"] += 1
        assert status < 500, (method, url, body[:100] if body else body, status, raw[:300])
        if status >= 400:
            payload = json.loads(raw)
            assert set(payload) == {"error"} and payload["error"]["code"] and payload["error"]["message"]
            stats["4xx"] += 1
        elif status < 300:
            stats["2xx"] += 1
            if path == "/api/v1/messages" and status == 201:
                created["messages"] += 1

    fuzz()
    after = _counts(db)
    assert after["messages"] - before["messages"] == created["messages"]
    assert after["users"] - before["users"] <= stats["2xx"]  # only successful registrations add users
    assert fuzz_server["process"].poll() is None
    record("fuzz", "HTTP endpoints (every /api route; random methods, bodies, queries, ids, tokens)", stats)
