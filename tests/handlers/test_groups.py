"""Groups over REST and WebSocket: management, member cap, non-members, fan-out to 50 members."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import tornado.httpclient

from config import Settings
from tests.conftest import make_settings
from tests.helpers import Node, WsClient, running_node

_ids = itertools.count(1)


async def create_group(node: Node, token: str, name: str, members: list[str]) -> str:
    response = await node.request("POST", "/api/v1/groups", token=token, json_body={"name": name,
                                                                                    "members": members})
    assert response.status == 201, response.body
    return response.body["group"]


async def group_send(node: Node, token: str, group: str, body: str) -> Any:
    return await node.request("POST", "/api/v1/messages", token=token, json_body={
        "group": group, "body": body, "client_msg_id": f"g{next(_ids)}"})


async def test_create_add_remove_leave_rename(node: Node) -> None:
    tokens = {u: await node.user(u) for u in ("owner", "ann", "ben", "cat", "dan")}
    gid = await create_group(node, tokens["owner"], "team", ["ann", "ben"])
    info = (await node.request("GET", f"/api/v1/groups/{gid}", token=tokens["ann"])).body
    assert info["owner"] == "owner" and info["members"] == ["owner", "ann", "ben"] and info["name"] == "team"
    listed = (await node.request("GET", "/api/v1/groups", token=tokens["ben"])).body["groups"]
    assert [(g["group"], g["member_count"]) for g in listed] == [(gid, 3)]
    # A plain member may not manage the group.
    refused = await node.request("POST", f"/api/v1/groups/{gid}/members", token=tokens["ann"],
                                 json_body={"members": ["cat"]})
    assert refused.status == 403 and refused.error_code == "not_allowed"
    assert (await node.request("PATCH", f"/api/v1/groups/{gid}", token=tokens["ben"],
                               json_body={"name": "mine"})).status == 403
    # The owner appoints an admin, who may then add and remove members.
    admin = await node.request("PUT", f"/api/v1/groups/{gid}/admins/ann", token=tokens["owner"])
    assert admin.status == 200 and admin.body["admins"] == ["ann"]
    added = await node.request("POST", f"/api/v1/groups/{gid}/members", token=tokens["ann"],
                               json_body={"members": ["cat", "dan", "cat"]})
    assert added.status == 200 and added.body["members"] == ["owner", "ann", "ben", "cat", "dan"]
    unknown = await node.request("POST", f"/api/v1/groups/{gid}/members", token=tokens["ann"],
                                 json_body={"members": ["ghost"]})
    assert unknown.status == 404 and unknown.error_code == "unknown_user"
    assert (await node.request("DELETE", f"/api/v1/groups/{gid}/members/owner", token=tokens["ann"])).status == 403
    removed = await node.request("DELETE", f"/api/v1/groups/{gid}/members/dan", token=tokens["ann"])
    assert removed.status == 204
    renamed = await node.request("PATCH", f"/api/v1/groups/{gid}", token=tokens["ann"], json_body={"name": "crew"})
    assert renamed.status == 200 and renamed.body["name"] == "crew"
    # Leaving; a leaving owner hands the group to the admin.
    assert (await node.request("POST", f"/api/v1/groups/{gid}/leave", token=tokens["ben"])).status == 204
    assert (await node.request("DELETE", f"/api/v1/groups/{gid}/members/owner", token=tokens["owner"])).status == 204
    members = (await node.request("GET", f"/api/v1/groups/{gid}/members", token=tokens["ann"])).body
    assert members["owner"] == "ann" and members["members"] == ["ann", "cat"] and members["admins"] == []
    # Those who left are outsiders now: same 404 as a group that does not exist.
    for who in ("ben", "owner", "dan"):
        gone = await node.request("GET", f"/api/v1/groups/{gid}", token=tokens[who])
        assert gone.status == 404 and gone.error_code == "unknown_group"
    assert (await node.request("GET", "/api/v1/groups", token=tokens["ben"])).body["groups"] == []


async def test_non_members_cannot_send_or_read(node: Node) -> None:
    owner, ann, eve = await node.user("owner"), await node.user("ann"), await node.user("eve")
    gid = await create_group(node, owner, "private", ["ann"])
    assert (await group_send(node, ann, gid, "secret plans")).status == 201
    refused = await group_send(node, eve, gid, "let me in")
    assert refused.status == 404 and refused.error_code == "unknown_group" and refused.body["error"]["field"] == "group"
    missing = await group_send(node, eve, "doesnotexist", "hello?")
    assert (missing.status, missing.error_code) == (refused.status, refused.error_code)
    history = await node.request("GET", f"/api/v1/conversations/g:{gid}/messages", token=eve)
    assert history.status == 404
    async with node.ws(eve) as ws:
        frame = await ws.call({"t": "send", "group": gid, "body": "ws try", "client_msg_id": "e1"})
        assert frame["t"] == "error" and frame["code"] == "unknown_group"
    assert (await node.pull(eve)).body["messages"] == []
    both = await node.request("POST", "/api/v1/messages", token=ann, json_body={
        "group": gid, "to": "owner", "body": "x", "client_msg_id": "both"})
    assert both.status == 400 and both.body["error"]["field"] == "group"
    stored = await node.service.store.messages.count_documents({"conv": f"g:{gid}"})
    assert stored == 1


@pytest.fixture
async def small_groups(settings: Settings, tmp_path: Path) -> AsyncIterator[Node]:
    async with running_node(make_settings(settings.mongo_url, settings.mongo_db, tmp_path,
                                          group_max_members=3)) as running:
        yield running


async def test_member_cap(small_groups: Node) -> None:
    node = small_groups
    tokens = {u: await node.user(u) for u in ("a", "b", "c", "d")}
    full = await node.request("POST", "/api/v1/groups", token=tokens["a"], json_body={
        "name": "big", "members": ["b", "c", "d"]})
    assert full.status == 409 and full.error_code == "group_full"
    gid = await create_group(node, tokens["a"], "ok", ["b", "c"])
    over = await node.request("POST", f"/api/v1/groups/{gid}/members", token=tokens["a"],
                              json_body={"members": ["d"]})
    assert over.status == 409 and over.error_code == "group_full"
    members = (await node.request("GET", f"/api/v1/groups/{gid}/members", token=tokens["a"])).body["members"]
    assert members == ["a", "b", "c"]


# -- fan-out --------------------------------------------------------------------------------------------

MEMBERS = 50
SENDERS = 3
PER_SENDER = 8
FANOUT_DEADLINE_SECS = 180


async def _ws_member(node: Node, token: str, want: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with node.ws(token) as ws:
        await _ws_collect(ws, got, want)
    return got


async def _ws_collect(ws: WsClient, got: list[dict[str, Any]], want: int) -> None:
    after = 0
    while len([m for m in got if m["kind"] == "text"]) < want:
        with_more = await ws.pull(after)
        got.extend(with_more["messages"])
        after = with_more["next"]
        if with_more["messages"]:
            await ws.ack(after)
        if not with_more["more"]:
            with contextlib.suppress(TimeoutError):  # a notify is a hint: pull again anyway
                await ws.notify(timeout=5)


async def _poll_member(http: tornado.httpclient.AsyncHTTPClient, node: Node, token: str, want: int
                       ) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    after = 0
    while len([m for m in got if m["kind"] == "text"]) < want:
        query = urlencode({"after": after, "timeout": 5})
        response = await http.fetch(f"{node.base_url}/api/v1/poll?{query}", request_timeout=30,
                                    headers={"Authorization": f"Bearer {token}"})
        page = json.loads(response.body)
        assert not page["gap"], page
        got.extend(page["messages"])
        after = page["next"]
    return got


async def test_fan_out_to_50_members_over_ws_and_long_poll(node: Node) -> None:
    names = [f"m{i:02d}" for i in range(MEMBERS)]
    tokens = {name: await node.user(name) for name in names}
    gid = await create_group(node, tokens[names[0]], "fifty", names[1:])
    total = SENDERS * PER_SENDER
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=MEMBERS)
    try:
        # Half the members on WebSockets, half long-polling; every one must see every message once.
        readers = [
            asyncio.ensure_future(_ws_member(node, tokens[name], total) if i % 2 == 0
                                  else _poll_member(http, node, tokens[name], total))
            for i, name in enumerate(names)
        ]
        await asyncio.sleep(0.5)

        async def sender(name: str) -> None:
            for k in range(PER_SENDER):
                response = await group_send(node, tokens[name], gid, f"{name}:{k}")
                assert response.status == 201, response.body
                # The sender's own entry is its own seq in its inbox: no "to" seq for a group.
                assert response.body["sender_seq"] >= 1

        await asyncio.gather(*(sender(names[i]) for i in range(SENDERS)))
        results = await asyncio.wait_for(asyncio.gather(*readers), FANOUT_DEADLINE_SECS)
    finally:
        http.close()
    archived = await node.service.store.messages.count_documents({"conv": f"g:{gid}", "kind": "text"})
    assert archived == total  # archived once, not once per member
    for name, got in zip(names, results, strict=True):
        seqs = [m["seq"] for m in got]
        assert seqs == list(range(1, len(seqs) + 1)), name  # this member's own gap-free seq order
        texts = [m for m in got if m["kind"] == "text"]
        assert len(texts) == total and len({m["msg_id"] for m in texts}) == total, name  # each once
        assert all(m["conv"] == f"g:{gid}" for m in texts)
        for s in range(SENDERS):  # each sender's messages in the order it sent them
            own = [m["body"] for m in texts if m["from"] == names[s]]
            assert own == [f"{names[s]}:{k}" for k in range(PER_SENDER)], name
