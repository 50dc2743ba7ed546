"""Abuse limits over real HTTP/WebSocket: 429 with Retry-After, registration and login limits per
address, login throttling, bounded password hashing, connection caps."""

from __future__ import annotations

import asyncio
import http.client
import json

import tornado.httpclient

from tests.conftest import make_settings
from tests.helpers import PASSWORD, Node


async def test_send_rate_per_user_gives_429_with_retry_after(mongo, db_name, tmp_path) -> None:
    node = await Node.start(make_settings(mongo.url, db_name, tmp_path, rate_send_per_sec=1.0, rate_send_burst=3))
    try:
        alice, _ = await node.user("alice"), await node.user("bob")
        statuses = [(await node.send(alice, "bob", f"m{i}")).status for i in range(4)]
        assert statuses == [201, 201, 201, 429]
        limited = await node.send(alice, "bob", "again")
        assert limited.error_code == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
        assert await node.service.store.messages.count_documents({}) == 3
        async with node.ws(alice) as ws:
            reply = await ws.send("bob", "over ws")
            assert reply["t"] == "error" and reply["code"] == "rate_limited"
            assert (await ws.call({"t": "ping"}))["t"] == "pong"  # the socket stays usable
    finally:
        await node.stop()


async def test_requests_per_address(mongo, db_name, tmp_path) -> None:
    node = await Node.start(make_settings(mongo.url, db_name, tmp_path, rate_ip_per_sec=0.5, rate_ip_burst=3))
    try:
        statuses = [(await node.request("GET", "/api/v1/inbox")).status for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
    finally:
        await node.stop()


async def test_login_brute_force_is_throttled_even_for_the_right_password(mongo, db_name, tmp_path) -> None:
    node = await Node.start(make_settings(mongo.url, db_name, tmp_path, login_max_failures=3))
    try:
        await node.register("alice")
        body = {"user": "alice", "password": "wrong guess"}
        statuses = [(await node.request("POST", "/api/v1/tokens", json_body=body)).status for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        right = await node.request("POST", "/api/v1/tokens",
                                   json_body={"user": "alice", "password": "correct horse battery"})
        assert right.status == 429 and right.error_code == "login_throttled"
        assert "Retry-After" in right.headers
        # Another user id is not locked out by alice's attacker (the per-address limit is 5x higher).
        await node.register("bob")
        assert (await node.login("bob")) is not None
    finally:
        await node.stop()


async def test_connections_per_user_are_capped(mongo, db_name, tmp_path) -> None:
    node = await Node.start(make_settings(mongo.url, db_name, tmp_path, max_connections_per_user=2))
    try:
        bob = await node.user("bob")
        async with node.ws(bob), node.ws(bob), node.ws() as third:
            refused = await third.call({"t": "auth", "token": bob})
            assert refused["code"] == "too_many_connections"
            poll = await node.poll(bob, timeout=1)
            assert poll.status == 429 and poll.error_code == "too_many_connections"
    finally:
        await node.stop()


async def test_old_jwt_secret_keeps_tokens_valid_after_rotation(mongo, db_name, tmp_path) -> None:
    old_secret, new_secret = "old-secret-" + "a" * 40, "new-secret-" + "b" * 40
    first = await Node.start(make_settings(mongo.url, db_name, tmp_path, jwt_secret=old_secret))
    try:
        old_token = await first.user("alice")
    finally:
        await first.stop()
    rotated = await Node.start(make_settings(mongo.url, db_name, tmp_path, jwt_secret=new_secret,
                                             jwt_old_secrets=old_secret))
    try:
        assert (await rotated.pull(old_token)).status == 200  # signed by the old key: still valid
        new_token = await rotated.login("alice")
        assert (await rotated.pull(new_token)).status == 200
    finally:
        await rotated.stop()
    retired = await Node.start(make_settings(mongo.url, db_name, tmp_path, jwt_secret=new_secret))
    try:
        assert (await retired.pull(old_token)).error_code == "invalid_token"  # old key retired
        assert (await retired.pull(new_token)).status == 200
    finally:
        await retired.stop()


async def test_each_websocket_send_counts_once_against_the_rate_whichever_way_it_is_checked(
        mongo, db_name, tmp_path) -> None:
    """A send to a known user is checked in memory, a group send in the store; either way it costs one
    token of the sender's burst (a send that falls back to the store's checks is not counted twice)."""
    node = await Node.start(make_settings(mongo.url, db_name, tmp_path, rate_send_per_sec=0.01, rate_send_burst=4))
    try:
        alice, _ = await node.user("alice"), await node.user("bob")
        created = await node.request("POST", "/api/v1/groups", token=alice, json_body={"name": "g", "members": ["bob"]})
        group = created.body["group"]
        async with node.ws(alice) as ws:
            replies = []
            for i, target in enumerate([{"group": group}, {"to": "bob"}, {"group": group}, {"to": "bob"},
                                        {"group": group}]):
                replies.append(await ws.call({"t": "send", **target, "body": f"m{i}", "client_msg_id": f"r{i}"}))
            assert [r["t"] for r in replies] == ["sent"] * 4 + ["error"]
            assert replies[-1]["code"] == "rate_limited"
    finally:
        await node.stop()


def _post_twice_on_one_connection(port: int, path: str, bodies: list[dict]) -> tuple[list[int], bool]:
    """POST ``bodies`` one after the other on one keep-alive connection; return the statuses and whether
    the server kept that connection open throughout (a refusal must not cost the client its connection)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    statuses, sockets = [], []
    try:
        for body in bodies:
            connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            sockets.append(connection.sock)
    finally:
        connection.close()
    return statuses, all(s is not None and s is sockets[0] for s in sockets)


async def _post_from(port: int, source_ip: str, path: str, body: dict) -> int:
    """POST from another loopback address: per-address limits must not count it with 127.0.0.1."""
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        response = await client.fetch(f"http://127.0.0.1:{port}{path}", method="POST", body=json.dumps(body),
                                      network_interface=source_ip, raise_error=False)
    finally:
        client.close()
    return response.code


async def test_registrations_per_address_are_limited_and_the_connection_stays(mongo, db_name, tmp_path) -> None:
    node = await Node.start(make_settings(mongo.url, db_name, tmp_path, rate_register_per_sec=0.01,
                                          rate_register_burst=2))
    try:
        statuses = [(await node.register(f"u{i}")).status for i in range(3)]
        assert statuses == [201, 201, 429]
        refused = await node.register("u3")
        assert refused.status == 429 and refused.error_code == "rate_limited" and refused.body["error"]["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert await node.service.store.users.count_documents({}) == 2
        # Two refusals in a row on one connection: answered, and the connection is kept.
        bodies = [{"user": f"k{i}", "password": "long password"} for i in range(2)]
        assert await asyncio.to_thread(_post_twice_on_one_connection, node.port, "/api/v1/users", bodies) == (
            [429, 429], True)
        # Another address has a bucket of its own.
        assert await _post_from(node.port, "127.0.0.2", "/api/v1/users",
                                {"user": "elsewhere", "password": "long password"}) == 201
    finally:
        await node.stop()


async def test_login_attempts_per_address_are_limited_even_with_the_right_password(mongo, db_name, tmp_path) -> None:
    node = await Node.start(make_settings(mongo.url, db_name, tmp_path, rate_login_per_sec=0.01,
                                          rate_login_burst=3))
    try:
        await node.register("alice")
        body = {"user": "alice", "password": PASSWORD}
        statuses = [(await node.request("POST", "/api/v1/tokens", json_body=body)).status for _ in range(4)]
        assert statuses == [201, 201, 201, 429]
        refused = await node.request("POST", "/api/v1/tokens", json_body=body)
        assert refused.status == 429 and refused.error_code == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        assert await _post_from(node.port, "127.0.0.2", "/api/v1/tokens", body) == 201
    finally:
        await node.stop()


async def test_zero_switches_the_registration_and_login_limits_off(mongo, db_name, tmp_path) -> None:
    node = await Node.start(make_settings(mongo.url, db_name, tmp_path, rate_register_per_sec=0.0,
                                          rate_register_burst=1, rate_login_per_sec=0.0, rate_login_burst=1))
    try:
        assert [(await node.register(f"u{i}")).status for i in range(5)] == [201] * 5
        for _ in range(5):
            await node.login("u0")  # asserts the 201
    finally:
        await node.stop()


async def test_logins_beyond_the_hashing_queue_are_refused_at_once_with_retry_after(
        mongo, db_name, tmp_path) -> None:
    node = await Node.start(make_settings(mongo.url, db_name, tmp_path, password_hash_concurrency=1,
                                          password_hash_queue=0))
    attempts = 30
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=attempts)
    try:
        responses = await asyncio.gather(*(client.fetch(
            f"{node.base_url}/api/v1/tokens", method="POST", raise_error=False,
            body=json.dumps({"user": f"nobody{i}", "password": "wrong guess"})) for i in range(attempts)))
        statuses = [r.code for r in responses]
        assert set(statuses) == {401, 429}, statuses  # every one answered: checked, or refused
        for refused in (r for r in responses if r.code == 429):
            assert json.loads(refused.body)["error"]["code"] == "auth_busy"
            assert int(refused.headers["Retry-After"]) >= 1
    finally:
        client.close()
        await node.stop()
