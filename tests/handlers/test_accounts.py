"""Registration, login and token refusal over HTTP."""

from __future__ import annotations

import time

import jwt
import pytest

from tests.conftest import TEST_JWT_SECRET
from tests.helpers import Node


async def test_register_login_and_use_token(node: Node) -> None:
    assert (await node.register("alice")).status == 201
    duplicate = await node.register("alice")
    assert duplicate.status == 409 and duplicate.error_code == "user_exists"
    response = await node.request("POST", "/api/v1/tokens",
                                  json_body={"user": "alice", "password": "correct horse battery"})
    assert response.status == 201
    assert response.body["device"] == "default" and response.body["expires_at"] > time.time()
    claims = jwt.decode(response.body["token"], TEST_JWT_SECRET, algorithms=["HS256"], issuer="im-server")
    assert claims["sub"] == "alice" and claims["dev"] == "default"
    assert (await node.pull(response.body["token"])).status == 200


async def test_password_is_stored_hashed(node: Node) -> None:
    await node.register("alice", password="plain-text-secret")
    doc = await node.service.store.users.find_one({"_id": "alice"})
    assert "plain-text-secret" not in str(doc) and doc["password_hash"].startswith("scrypt$")


async def test_wrong_password_and_unknown_user_get_the_same_error(node: Node) -> None:
    await node.register("alice")
    wrong = await node.request("POST", "/api/v1/tokens", json_body={"user": "alice", "password": "nope-nope"})
    unknown = await node.request("POST", "/api/v1/tokens", json_body={"user": "zed", "password": "nope-nope"})
    assert wrong.status == unknown.status == 401
    assert wrong.body == unknown.body


@pytest.mark.parametrize(("body", "field"), [
    ({"user": "Alice", "password": "long enough"}, "user"),
    ({"user": "a:b", "password": "long enough"}, "user"),
    ({"user": "alice", "password": "short"}, "password"),
    ({"user": "alice"}, "password"),
    ({"password": "long enough"}, "user"),
])
async def test_bad_registrations_name_the_field(node: Node, body: dict, field: str) -> None:
    response = await node.request("POST", "/api/v1/users", json_body=body)
    assert response.status == 400 and response.body["error"]["field"] == field
    assert await node.service.store.users.count_documents({}) == 0


def _token(**claims: object) -> str:
    now = int(time.time())
    base = {"sub": "alice", "dev": "d", "iss": "im-server", "iat": now, "exp": now + 60}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, TEST_JWT_SECRET, algorithm="HS256")


@pytest.mark.parametrize(("token", "code"), [
    (_token(exp=int(time.time()) - 3600), "token_expired"),
    (jwt.encode({"sub": "alice", "dev": "d", "iss": "im-server", "iat": int(time.time()),
                 "exp": int(time.time()) + 60}, "another-secret-" + "y" * 40, algorithm="HS256"), "invalid_token"),
    ("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImRldiI6ImQiLCJpc3MiOiJpbS1zZXJ2ZXIiLCJpYXQiOj"
     "E3MDAwMDAwMDAsImV4cCI6NDEwMDAwMDAwMH0.", "invalid_token"),  # alg: none
    (_token(dev=None), "invalid_token"),
    ("garbage", "invalid_token"),
])
async def test_bad_tokens_get_401_with_a_reason(node: Node, token: str, code: str) -> None:
    await node.register("alice")
    for response in (await node.pull(token), await node.poll(token, timeout=1),
                     await node.send(token, "alice", "x")):
        assert response.status == 401
        assert response.error_code == code
        assert response.body["error"]["message"]


async def test_bad_authorization_header_scheme(node: Node) -> None:
    response = await node.request("GET", "/api/v1/inbox", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert response.status == 401 and response.error_code == "invalid_token"
