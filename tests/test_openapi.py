"""Contract test: docs/openapi.yaml against the running server.

Three checks keep the spec honest as the API grows:
- every route and HTTP method of ``handlers/app.py`` is in the spec (a new endpoint without a spec entry
  fails here);
- every operation in the spec is called for real (``CASES`` below must name each one), and each answer's
  status must be documented for it and its JSON body must match the documented schema;
- generic probes for every operation: no token where one is needed -> a documented 401, an empty JSON
  object as the body -> a documented 400 (or 2xx when everything is optional).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import tornado.web
import yaml

from handlers.app import make_app
from handlers.openapi import OPENAPI_PATH
from tests.helpers import Node, Response

SPEC = yaml.safe_load(OPENAPI_PATH.read_text())
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
# Routes that are not HTTP API operations: the WebSocket, the catch-alls and the static web client.
NOT_IN_SPEC = {"/ws", "/api/.*", "/(.*)"}


# -- a small JSON-schema checker for the subset the spec uses ----------------------------------------

def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = SPEC
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}


def check(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Problems of ``value`` against ``schema`` (empty when it matches)."""
    schema = resolve(schema)
    if value is None:
        return [] if schema.get("nullable") or not schema else [f"{where}: null"]
    kind = schema.get("type")
    if kind:
        expected = _TYPES[kind]
        if not isinstance(value, expected) or (kind in ("integer", "number") and isinstance(value, bool)):
            return [f"{where}: {type(value).__name__} is not {kind}"]
    problems: list[str] = []
    for part in schema.get("allOf", []):
        problems += check(value, part, where)
    if "oneOf" in schema and all(check(value, part, where) for part in schema["oneOf"]):
        problems.append(f"{where}: matches none of its oneOf schemas")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{where}: missing {name!r}")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                problems += check(item, properties[name], f"{where}.{name}")
            elif isinstance(extra, dict):
                problems += check(item, extra, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += check(item, schema["items"], f"{where}[{i}]")
    return problems


def test_checker_catches_mismatches() -> None:
    page = {"$ref": "#/components/schemas/Page"}
    assert check({"messages": [], "next": 0, "head": 0, "epoch": "e", "gap": False, "more": False}, page) == []
    assert check({"messages": [{"seq": "1"}], "next": 0, "head": 0, "epoch": "e", "gap": False}, page)
    assert check({"error": {"code": 1, "message": "m"}}, {"$ref": "#/components/schemas/Error"})
    assert check({"msg_id": 1}, {"nullable": True, "allOf": [{"$ref": "#/components/schemas/ArchivedMessage"}]})
    assert check({"results": 1}, {"oneOf": [{"$ref": "#/components/schemas/Receipt"},
                                            {"$ref": "#/components/schemas/SendBatchResults"}]})


# -- the spec covers the application ------------------------------------------------------------------

def _spec_key(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def _route_key(pattern: str) -> str:
    return re.sub(r"\([^)]*\)", "{}", pattern.rstrip("$")).replace("\\.", ".")


def test_every_route_and_method_is_in_the_spec(node: Node) -> None:
    app = make_app(node.service, node.runtime.settings)
    spec_ops = {(_spec_key(path), method) for path, item in SPEC["paths"].items() for method in item
                if method in HTTP_METHODS}
    missing = []
    for rule in app.wildcard_router.rules:
        pattern = rule.matcher.regex.pattern.rstrip("$")
        if pattern in NOT_IN_SPEC:
            continue
        handler = rule.target
        for method in HTTP_METHODS:
            implemented = getattr(handler, method) is not getattr(tornado.web.RequestHandler, method)
            if implemented and (_route_key(pattern), method) not in spec_ops:
                missing.append(f"{method.upper()} {pattern}")
    assert not missing, f"routes missing from docs/openapi.yaml: {missing}"


# -- every operation, called for real ------------------------------------------------------------------

@dataclass
class World:
    node: Node
    alice: str
    bob: str
    spare: str


async def _world(node: Node) -> World:
    alice, bob, spare = await node.user("alice"), await node.user("bob"), await node.user("spare")
    for i in range(3):
        await node.send(alice, "bob", f"m{i}", client_msg_id=f"k{i}")
    return World(node, alice, bob, spare)


Call = Callable[[World], Awaitable[Response]]

async def _group(w: World) -> str:
    """A group of alice with bob (made once per world)."""
    if not hasattr(w, "group"):
        created = await w.node.request("POST", "/api/v1/groups", token=w.alice,
                                       json_body={"name": "team", "members": ["bob"]})
        w.group = created.body["group"]  # type: ignore[attr-defined]
    return w.group  # type: ignore[attr-defined]


async def _file(w: World) -> str:
    if not hasattr(w, "file"):
        up = await w.node.request("POST", "/api/v1/files", token=w.alice, raw_body=b"data", query={"to": "bob"},
                                  headers={"Content-Type": "application/octet-stream"})
        w.file = up.body["file_id"]  # type: ignore[attr-defined]
    return w.file  # type: ignore[attr-defined]


async def _stranger(w: World) -> str:
    """A user outside everything (``spare`` is logged out by the logout case)."""
    if not hasattr(w, "stranger"):
        w.stranger = await w.node.user("stranger")  # type: ignore[attr-defined]
    return w.stranger  # type: ignore[attr-defined]


async def _befriended(w: World, action: str, who: str, token: str | None) -> Response:
    """``who`` asks alice to be friends; alice answers with ``action``."""
    await w.node.request("POST", "/api/v1/friends", token=token or await _stranger(w), json_body={"user": "alice"})
    return await w.node.request("POST", f"/api/v1/friends/{who}/{action}", token=w.alice)


async def _group_message(w: World) -> str:
    sent = await w.node.request("POST", "/api/v1/messages", token=w.alice, json_body={
        "group": await _group(w), "body": "news", "client_msg_id": "gm1"})
    return sent.body["msg_id"]


async def _in_group(w: World, method: str, suffix: str, token: str, **kwargs: Any) -> Response:
    return await w.node.request(method, f"/api/v1/groups/{await _group(w)}{suffix}", token=token, **kwargs)


def _conversation_cases() -> dict[tuple[str, str], list[Call]]:
    """Friends, groups, receipts, files, history (issue 4)."""
    return {
        ("get", "/api/v1/friends"): [lambda w: w.node.request("GET", "/api/v1/friends", token=w.alice)],
        ("post", "/api/v1/friends"): [
            lambda w: w.node.request("POST", "/api/v1/friends", token=w.alice, json_body={"user": "bob"}),
            lambda w: w.node.request("POST", "/api/v1/friends", token=w.alice, json_body={"user": "nobody"}),
            lambda w: w.node.request("POST", "/api/v1/friends", token=w.alice, json_body={"user": "Bad Id"}),
        ],
        ("delete", "/api/v1/friends/{user}"): [
            lambda w: w.node.request("DELETE", "/api/v1/friends/bob", token=w.alice),
            lambda w: w.node.request("DELETE", "/api/v1/friends/bob", token=w.alice),  # 404
        ],
        ("post", "/api/v1/friends/{user}/accept"): [
            lambda w: _befriended(w, "accept", "bob", w.bob),
            lambda w: w.node.request("POST", "/api/v1/friends/nobody/accept", token=w.alice),  # 404
        ],
        ("post", "/api/v1/friends/{user}/decline"): [
            lambda w: _befriended(w, "decline", "stranger", None),
            lambda w: w.node.request("POST", "/api/v1/friends/nobody/decline", token=w.alice),  # 404
        ],
        ("get", "/api/v1/groups"): [lambda w: w.node.request("GET", "/api/v1/groups", token=w.alice)],
        ("post", "/api/v1/groups"): [
            lambda w: w.node.request("POST", "/api/v1/groups", token=w.alice, json_body={"name": "x"}),
            lambda w: w.node.request("POST", "/api/v1/groups", token=w.alice,
                                     json_body={"name": "x", "members": ["ghost"]}),  # 404
        ],
        ("get", "/api/v1/groups/{group}"): [
            lambda w: _in_group(w, "GET", "", w.bob),
            lambda w: w.node.request("GET", "/api/v1/groups/nope", token=w.alice),  # 404
            lambda w: w.node.request("GET", "/api/v1/groups/NOT%20VALID", token=w.alice),  # 400
        ],
        ("patch", "/api/v1/groups/{group}"): [
            lambda w: _in_group(w, "PATCH", "", w.alice, json_body={"name": "crew"}),
            lambda w: _in_group(w, "PATCH", "", w.bob, json_body={"name": "mine"}),  # 403
        ],
        ("get", "/api/v1/groups/{group}/members"): [lambda w: _in_group(w, "GET", "/members", w.bob)],
        ("post", "/api/v1/groups/{group}/members"): [
            lambda w: _in_group(w, "POST", "/members", w.alice, json_body={"members": ["spare"]}),
            lambda w: _in_group(w, "POST", "/members", w.bob, json_body={"members": ["spare"]}),  # 403
        ],
        ("delete", "/api/v1/groups/{group}/members/{user}"): [
            lambda w: _in_group(w, "DELETE", "/members/spare", w.alice),
            lambda w: _in_group(w, "DELETE", "/members/alice", w.bob),  # 403: the owner
        ],
        ("post", "/api/v1/groups/{group}/leave"): [
            lambda w: w.node.request("POST", "/api/v1/groups/nope/leave", token=w.alice),  # 404
            lambda w: _leave_and_return(w),
        ],
        ("put", "/api/v1/groups/{group}/admins/{user}"): [
            lambda w: _in_group(w, "PUT", "/admins/bob", w.alice),
            lambda w: _in_group(w, "PUT", "/admins/alice", w.bob),  # 403
        ],
        ("delete", "/api/v1/groups/{group}/admins/{user}"): [
            lambda w: _in_group(w, "DELETE", "/admins/bob", w.alice),
        ],
        ("get", "/api/v1/conversations/{conv}/messages"): [
            lambda w: w.node.request("GET", "/api/v1/conversations/d:alice:bob/messages", token=w.bob,
                                     query={"limit": 2}),
            lambda w: _as_stranger(w, "GET", "/api/v1/conversations/d:alice:bob/messages"),  # 404
            lambda w: w.node.request("GET", "/api/v1/conversations/d:alice:bob/messages", token=w.bob,
                                     query={"before": "zz"}),  # 400
        ],
        ("get", "/api/v1/messages/{msg_id}/receipts"): [
            lambda w: _summary(w),
            lambda w: w.node.request("GET", "/api/v1/messages/ffffffffffffffffffffffff/receipts", token=w.alice),
        ],
        ("post", "/api/v1/receipts/read"): [
            lambda w: _read(w),
            lambda w: w.node.request("POST", "/api/v1/receipts/read", token=w.bob, json_body={"msg_ids": ["x"]}),
        ],
        ("post", "/api/v1/files"): [
            lambda w: w.node.request("POST", "/api/v1/files", token=w.alice, raw_body=b"data",
                                     query={"to": "bob", "name": "a.txt"}),
            lambda w: w.node.request("POST", "/api/v1/files", token=w.alice, raw_body=b"data"),  # 400
            lambda w: w.node.request("POST", "/api/v1/files", token=w.alice, raw_body=b"data",
                                     query={"to": "nobody"}),  # 404
        ],
        ("get", "/api/v1/files/{file_id}"): [
            lambda w: _download(w, w.bob),
            lambda w: _download(w, None),  # 404: not a participant
        ],
    }


async def _leave_and_return(w: World) -> Response:
    left = await _in_group(w, "POST", "/leave", w.bob)
    await _in_group(w, "POST", "/members", w.alice, json_body={"members": ["bob"]})
    return left


async def _summary(w: World) -> Response:
    msg_id = await _group_message(w)
    return await w.node.request("GET", f"/api/v1/messages/{msg_id}/receipts", token=w.alice)


async def _read(w: World) -> Response:
    msg_id = await _group_message(w)
    return await w.node.request("POST", "/api/v1/receipts/read", token=w.bob, json_body={"msg_ids": [msg_id]})


async def _download(w: World, token: str | None) -> Response:
    return await w.node.request("GET", f"/api/v1/files/{await _file(w)}", token=token or await _stranger(w))


async def _as_stranger(w: World, method: str, path: str) -> Response:
    return await w.node.request(method, path, token=await _stranger(w))


# (method, spec path) -> calls; together they must produce every documented 2xx status.
CASES: dict[tuple[str, str], list[Call]] = {
    ("post", "/api/v1/users"): [
        lambda w: w.node.register("carol"),
        lambda w: w.node.register("carol"),  # 409
        lambda w: w.node.request("POST", "/api/v1/users", json_body={"user": "Bad Id", "password": "x" * 10}),
    ],
    ("get", "/api/v1/conversations"): [
        lambda w: w.node.request("GET", "/api/v1/conversations", token=w.alice),
        lambda w: w.node.request("GET", "/api/v1/conversations", token=w.alice, query={"limit": 1}),
        lambda w: w.node.request("GET", "/api/v1/conversations", token=w.alice, query={"before": "x"}),
        lambda w: w.node.request("GET", "/api/v1/conversations"),
    ],
    ("get", "/api/v1/users/{user}"): [
        lambda w: w.node.request("GET", "/api/v1/users/bob", token=w.alice),
        lambda w: w.node.request("GET", "/api/v1/users/nobody", token=w.alice),
        lambda w: w.node.request("GET", "/api/v1/users/Bad%20Id", token=w.alice),
        lambda w: w.node.request("GET", "/api/v1/users/bob"),
    ],
    ("post", "/api/v1/tokens"): [
        lambda w: w.node.request("POST", "/api/v1/tokens", json_body={"user": "bob", "password": "correct horse battery", "device": "phone"}),
        lambda w: w.node.request("POST", "/api/v1/tokens", json_body={"user": "bob", "password": "wrong password"}),
    ],
    ("delete", "/api/v1/tokens"): [
        lambda w: w.node.request("DELETE", "/api/v1/tokens?devices=bogus", token=w.spare),
        lambda w: w.node.request("DELETE", "/api/v1/tokens", token=w.spare),
        lambda w: w.node.request("DELETE", "/api/v1/tokens?devices=all", token=w.spare),
    ],
    ("post", "/api/v1/messages"): [
        lambda w: w.node.request("POST", "/api/v1/messages", token=w.alice, json_body={"messages": [
            {"to": "bob", "body": "batched", "client_msg_id": "batch-1"},
            {"to": "nobody", "body": "x", "client_msg_id": "batch-2"}]}),
        lambda w: w.node.send(w.alice, "bob", "hello", client_msg_id="c1"),
        lambda w: w.node.send(w.alice, "bob", "hello", client_msg_id="c1"),  # 200 duplicate
        lambda w: w.node.send(w.alice, "nobody", "hello"),  # 404
        lambda w: w.node.request("POST", "/api/v1/messages", token=w.alice, json_body={"to": "bob", "body": "x" * 20000, "client_msg_id": "big"}),
    ],
    ("get", "/api/v1/inbox"): [
        lambda w: w.node.pull(w.bob, after=0, limit=2),
        lambda w: w.node.request("GET", "/api/v1/inbox", token=w.bob, query={"after": "x"}),
    ],
    ("post", "/api/v1/inbox/ack"): [
        lambda w: w.node.ack(w.bob, 1),
        lambda w: w.node.ack(w.bob, 999),  # beyond the head
    ],
    ("get", "/api/v1/poll"): [
        lambda w: w.node.poll(w.bob, after=0, timeout=1),
        lambda w: w.node.poll(w.alice, after=3, timeout=1),  # nothing new: empty page after the wait
        lambda w: w.node.request("GET", "/api/v1/poll", token=w.bob, query={"timeout": 999}),
    ],
    ("get", "/api/v1/presence"): [
        lambda w: w.node.request("GET", "/api/v1/presence", token=w.alice, query={"limit": 10}),
        lambda w: w.node.request("GET", "/api/v1/presence", token=w.alice, query={"limit": 0}),
    ],
    ("get", "/api/v1/presence/{user}"): [
        lambda w: w.node.request("GET", "/api/v1/presence/bob", token=w.alice),
        lambda w: w.node.request("GET", "/api/v1/presence/NOT%20VALID", token=w.alice),
    ],
    **{key: calls for key, calls in _conversation_cases().items()},
    ("get", "/healthz"): [lambda w: w.node.request("GET", "/healthz")],
    ("get", "/metrics"): [lambda w: w.node.request("GET", "/metrics")],
    ("get", "/api/v1/openapi.yaml"): [lambda w: w.node.request("GET", "/api/v1/openapi.yaml")],
}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in SPEC["paths"].items()
            for method, op in item.items() if method in HTTP_METHODS]


def test_every_operation_has_cases() -> None:
    assert {(m, p) for m, p, _ in _operations()} == set(CASES)


def _assert_documented(method: str, path: str, op: dict[str, Any], response: Response) -> None:
    responses = op["responses"]
    label = f"{method.upper()} {path} -> {response.status}"
    assert str(response.status) in responses, f"{label} is not documented: {response.body}"
    documented = resolve(responses[str(response.status)])
    content = documented.get("content", {})
    if "application/json" in content:
        assert response.headers.get("Content-Type", "").startswith("application/json"), label
        problems = check(response.body, content["application/json"].get("schema", {}))
        assert not problems, f"{label}: {problems}"
    elif content:
        declared = next(iter(content))
        assert response.headers.get("Content-Type", "").startswith(declared), label
    assert response.headers.get("X-Request-Id"), f"{label}: no X-Request-Id"


async def test_every_operation_answers_as_documented(node: Node) -> None:
    world = await _world(node)
    for method, path, op in _operations():
        seen = set()
        for call in CASES[(method, path)]:
            response = await call(world)
            _assert_documented(method, path, op, response)
            seen.add(str(response.status))
        success = {code for code in op["responses"] if code.startswith("2")}
        assert success <= seen, f"{method.upper()} {path}: documented {success}, exercised {seen}"


async def test_generic_probes_get_documented_errors(node: Node) -> None:
    token = await node.user("prober")
    for method, path, op in _operations():
        concrete = path.replace("{user}", "prober")
        if op.get("security"):
            response = await node.request(method.upper(), concrete)
            assert response.status == 401, f"{method} {path}: {response.status}"
            _assert_documented(method, path, op, response)
        if "application/json" in op.get("requestBody", {}).get("content", {}):  # not raw file uploads
            response = await node.request(method.upper(), concrete, token=token, json_body={})
            assert response.status == 400 and response.body["error"]["field"], f"{method} {path}"
            _assert_documented(method, path, op, response)
            response = await node.request(method.upper(), concrete, token=token, raw_body=b"{not json")
            assert response.status == 400 and response.error_code == "bad_json", f"{method} {path}"


@pytest.mark.parametrize("path", ["/api/v1/nothing-here", "/api/v2/inbox"])
async def test_unknown_api_paths_are_json_404(node: Node, path: str) -> None:
    response = await node.request("GET", path)
    assert response.status == 404 and response.error_code == "not_found"
    assert json.dumps(response.body)
