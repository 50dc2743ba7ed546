"""Every class of bad HTTP input gets a clear JSON error and changes nothing stored."""

from __future__ import annotations

import pytest

from tests.helpers import Node


async def _snapshot(node: Node) -> dict[str, int]:
    store = node.service.store
    return {name: await getattr(store, name).count_documents({})
            for name in ("users", "messages", "counters", "trims", "cursors")}


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    (b"{oops", 400, "bad_json", None),
    (b"[1, 2]", 400, "bad_json", None),
    (b"", 400, "bad_json", None),
    (b'{"to": "bob", "client_msg_id": "1"}', 400, "invalid", "body"),
    (b'{"to": 7, "body": "x", "client_msg_id": "1"}', 400, "invalid", "to"),
    (b'{"to": "bob", "body": "x", "client_msg_id": ""}', 400, "invalid", "client_msg_id"),
    (b'{"to": "bob", "body": " \\n\\t\\u3000 ", "client_msg_id": "1"}', 400, "empty_body", "body"),
    (b'{"to": "nobody", "body": "x", "client_msg_id": "1"}', 404, "unknown_recipient", "to"),
    (b'{"to": "bob", "body": "' + b"x" * (17 * 1024) + b'", "client_msg_id": "1"}', 413, "too_large", "body"),
    (b'{"to": "bob", "body": "' + b"x" * (70 * 1024) + b'", "client_msg_id": "1"}', 413, "body_too_large", None),
])
async def test_bad_send_bodies(node: Node, body: bytes, status: int, code: str, field: str | None) -> None:
    alice, _ = await node.user("alice"), await node.user("bob")
    before = await _snapshot(node)
    response = await node.request("POST", "/api/v1/messages", raw_body=body, token=alice)
    assert response.status == status, response.body
    assert response.error_code == code and response.body["error"]["message"]
    assert response.body["error"].get("field") == field
    assert await _snapshot(node) == before


@pytest.mark.parametrize(("path", "query", "field"), [
    ("/api/v1/inbox", {"after": -1}, "after"),
    ("/api/v1/inbox", {"after": "1e3"}, "after"),
    ("/api/v1/inbox", {"after": 0, "limit": 0}, "limit"),
    ("/api/v1/inbox", {"after": 0, "limit": 100000}, "limit"),
    ("/api/v1/poll", {"after": "two", "timeout": 1}, "after"),
])
async def test_bad_query_numbers(node: Node, path: str, query: dict, field: str) -> None:
    bob = await node.user("bob")
    response = await node.request("GET", path, token=bob, query=query)
    assert response.status == 400 and response.body["error"]["field"] == field


@pytest.mark.parametrize("body", [b'{"upto": -2}', b'{"upto": "3"}', b'{"upto": 2.5}', b"{}", b'{"upto": true}'])
async def test_bad_acks_change_nothing(node: Node, body: bytes) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    await node.send(alice, "bob", "keep me")
    before = await _snapshot(node)
    response = await node.request("POST", "/api/v1/inbox/ack", raw_body=body, token=bob)
    assert response.status == 400 and response.body["error"]["field"] == "upto"
    assert await _snapshot(node) == before


async def test_unknown_endpoint_and_method(node: Node) -> None:
    missing = await node.request("GET", "/api/v1/nothing")
    assert missing.status == 404 and missing.error_code == "not_found"
    wrong_method = await node.request("DELETE", "/api/v1/messages")
    assert wrong_method.status == 405 and wrong_method.error_code == "method_not_allowed"
