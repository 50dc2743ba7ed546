"""Registration, login and token refusal over HTTP."""

from __future__ import annotations

import time

import jwt
import pytest

from im.accounts.tokens import key_id
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
    assert claims["sub"] == "alice" and claims["dev"] == "default" and claims["ver"] == 0
    assert jwt.get_unverified_header(response.body["token"])["kid"] == key_id(TEST_JWT_SECRET)
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


def _token(secret: str = TEST_JWT_SECRET, kid: str | None = None, algorithm: str = "HS256",
           **claims: object) -> str:
    """A token as the server would sign it (kid header, all claims), with some part changed."""
    now = int(time.time())
    base = {"sub": "alice", "dev": "d", "ver": 0, "iss": "im-server", "iat": now, "nbf": now, "exp": now + 86400}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, secret, algorithm=algorithm,
                      headers={"kid": kid or key_id(TEST_JWT_SECRET)})


@pytest.mark.parametrize(("token", "code"), [
    (_token(exp=int(time.time()) - 3600), "token_expired"),
    (_token(nbf=int(time.time()) + 3600), "invalid_token"),  # not valid yet
    (_token(secret="another-secret-" + "y" * 40), "invalid_token"),  # forged: right kid, wrong key
    (_token(kid="0123456789ab"), "invalid_token"),  # unknown key id
    (_token(algorithm="HS512"), "invalid_token"),  # algorithm confusion
    ("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImRldiI6ImQiLCJpc3MiOiJpbS1zZXJ2ZXIiLCJpYXQiOj"
     "E3MDAwMDAwMDAsImV4cCI6NDEwMDAwMDAwMH0.", "invalid_token"),  # alg: none
    (_token(dev=None), "invalid_token"),  # missing claims
    (_token(ver=None), "invalid_token"),
    (_token(iss="someone-else"), "invalid_token"),
    (_token(sub="nobody"), "invalid_token"),  # well signed, but no such user
    (_token(ver=3), "token_revoked"),  # from a token version that is not the user's
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


async def test_signing_out_everywhere_revokes_every_token_of_the_user(node: Node) -> None:
    await node.register("alice")
    phone, browser = await node.login("alice", device="phone"), await node.login("alice", device="browser")
    assert (await node.pull(browser)).status == 200
    response = await node.request("DELETE", "/api/v1/tokens?devices=all", token=phone)
    assert response.status == 200 and response.body == {"signed_out": "all", "user": "alice"}
    for token in (phone, browser):
        response = await node.pull(token)
        assert response.status == 401 and response.error_code == "token_revoked"
    async with node.ws() as ws:
        assert (await ws.call({"t": "auth", "token": browser}))["code"] == "token_revoked"
    fresh = await node.login("alice", device="phone")  # logging in again works
    assert (await node.pull(fresh)).status == 200


async def test_signing_out_revokes_this_device_only(node: Node) -> None:
    await node.register("alice")
    phone, old_phone = await node.login("alice", device="phone"), await node.login("alice", device="phone")
    browser = await node.login("alice", device="browser")
    response = await node.request("DELETE", "/api/v1/tokens", token=phone)
    assert response.status == 200
    assert response.body == {"signed_out": "device", "device": "phone", "user": "alice"}
    for token in (phone, old_phone):  # every token of the device, not only the one that asked
        response = await node.pull(token)
        assert response.status == 401 and response.error_code == "token_revoked"
    assert (await node.pull(browser)).status == 200  # the other device stays signed in
    async with node.ws() as ws:
        assert (await ws.call({"t": "auth", "token": browser}))["t"] != "error"
    again = await node.login("alice", device="phone")  # signing in again on the device works
    assert (await node.pull(again)).status == 200
    # Signing out everywhere later also revokes the device's new token.
    assert (await node.request("DELETE", "/api/v1/tokens?devices=all", token=browser)).status == 200
    assert (await node.pull(again)).error_code == "token_revoked"


async def test_signing_out_refuses_an_unknown_scope(node: Node) -> None:
    token = await node.user("alice")
    response = await node.request("DELETE", "/api/v1/tokens?devices=some", token=token)
    assert response.status == 400 and response.error_code == "invalid"
    assert (await node.pull(token)).status == 200  # nothing was revoked


async def test_a_user_can_be_looked_up_before_opening_a_chat(node: Node) -> None:
    token = await node.user("alice")
    await node.register("bob")
    found = await node.request("GET", "/api/v1/users/bob", token=token)
    assert found.status == 200 and found.body == {"user": "bob"}
    missing = await node.request("GET", "/api/v1/users/nobody", token=token)
    assert missing.status == 404 and missing.error_code == "unknown_user"
    assert (await node.request("GET", "/api/v1/users/Bad%20Id", token=token)).status == 400
    assert (await node.request("GET", "/api/v1/users/bob")).status == 401  # only for signed-in callers


async def test_public_endpoints_ignore_a_stale_token(node: Node) -> None:
    await node.register("alice")
    response = await node.request("POST", "/api/v1/tokens", token="stale.garbage.token",
                                  json_body={"user": "alice", "password": "correct horse battery"})
    assert response.status == 201
