"""Observability: /metrics counts what happened, request ids are echoed and logged, JSON log lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re

from im.ops.logging_setup import (
    REQUEST_ID,
    JsonFormatter,
    RequestIdFilter,
    configure_logging,
    request_id_from,
)
from tests.helpers import Node


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


async def scrape(node: Node) -> str:
    response = await node.http.fetch(node.base_url + "/metrics")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.body.decode()


async def test_metrics_count_messages_connections_and_latencies(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    before = await scrape(node)
    assert metric(before, "im_messages_stored_total") == 0
    for i in range(3):
        await node.send(alice, "bob", f"m{i}", client_msg_id=f"k{i}")
    await node.send(alice, "bob", "m0", client_msg_id="k0")  # duplicate
    await node.pull(bob)
    await node.ack(bob, 3)
    async with node.ws(bob):
        # Alice's seq 4 is the delivered receipt bob's ack sent her (a stored entry of kind receipt).
        poll = asyncio.create_task(node.poll(alice, after=4, timeout=5))
        await asyncio.sleep(0.5)
        during = await scrape(node)
        await node.send(bob, "alice", "wake up")
        assert (await poll).status == 200
    assert metric(during, 'im_connections{transport="ws"}') == 1
    assert metric(during, 'im_connections{transport="longpoll"}') == 1
    assert metric(during, "im_long_poll_waiters") == 1
    after = await scrape(node)
    assert metric(after, "im_messages_stored_total") == 5  # 4 messages + 1 delivered receipt
    assert metric(after, "im_duplicate_sends_total") == 1
    assert metric(after, "im_inbox_entries_written_total") == 9
    assert metric(after, "im_messages_delivered_total") >= 4  # bob's 3 + alice's wake-up (and her own)
    assert metric(after, "im_pull_seconds_count") >= 2
    assert metric(after, "im_ack_seconds_count") >= 1
    assert metric(after, 'im_http_request_seconds_count{handler="MessagesHandler",status="2xx"}') == 5
    assert metric(after, "im_long_poll_waiters") == 0


async def test_request_id_is_echoed_or_generated(node: Node) -> None:
    given = await node.request("GET", "/healthz", headers={"X-Request-Id": "abc-123"})
    assert given.headers["X-Request-Id"] == "abc-123"
    made = await node.request("GET", "/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-Id"])
    # Also on errors (whose headers are reset) and for a forged value, which is replaced.
    error = await node.request("GET", "/api/v1/inbox", headers={"X-Request-Id": "bad\u00e9id"})
    assert error.status == 401 and re.fullmatch(r"[0-9a-f]{32}", error.headers["X-Request-Id"])


async def test_access_log_lines_carry_the_request_id(node: Node) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("tornado.access")
    access.addHandler(handler)
    try:
        await node.request("POST", "/api/v1/users", json_body={"user": "x"}, headers={"X-Request-Id": "req-42"})
    finally:
        access.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    line = next(entry for entry in lines if entry.get("path") == "/api/v1/users")
    assert line["request_id"] == "req-42"
    assert (line["status"], line["method"], line["level"]) == (400, "POST", "WARNING")
    assert line["duration_ms"] >= 0


def test_json_log_format_with_request_id_from_context() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("INFO", "json", stream)
        token = REQUEST_ID.set("r-1")
        try:
            logging.getLogger("im.test").info("hello %s", "world", extra={"user": "alice"})
        finally:
            REQUEST_ID.reset(token)
        logging.getLogger("im.test").warning("outside")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "hello world" and first["request_id"] == "r-1" and first["user"] == "alice"
    assert first["logger"] == "im.test" and first["level"] == "INFO"
    assert "request_id" not in second


def test_request_id_from_header_is_sanitised() -> None:
    assert request_id_from("abc.DEF_1:2-3") == "abc.DEF_1:2-3"
    for bad in (None, "", "a b", "x" * 65, "evil\nline"):
        assert re.fullmatch(r"[0-9a-f]{32}", request_id_from(bad))


async def test_openapi_spec_is_served(node: Node) -> None:
    response = await node.http.fetch(node.base_url + "/api/v1/openapi.yaml")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/yaml")
    assert response.body.startswith(b"openapi: 3.")
