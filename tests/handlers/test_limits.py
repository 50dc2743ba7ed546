"""Abuse limits over real HTTP/WebSocket: 429 with Retry-After, login throttling, connection caps."""

from __future__ import annotations

from tests.conftest import make_settings
from tests.helpers import Node


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
