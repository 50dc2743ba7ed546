"""Authorization sweep: every endpoint and frame that names a conversation, group, file, message or user
is tried by an outsider (mallory) with other users' ids, and by a member without the right (bob) where
rights differ. Each attempt must be refused -- with the very error a missing object gets wherever the
existence of the object should not be revealed -- or, for reads that are scoped to the caller (pull,
lists), return nothing of anybody else's; and no attempt may change anything stored.

The case list is checked against ``handlers.app.build_routes`` and ``im.protocol.CLIENT_FRAME_TYPES``: a
new endpoint, method or frame type without a case here (or a stated reason to need none) fails
``test_every_route_method_and_frame_has_a_case``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import tornado.web
import tornado.websocket

from config import Settings
from handlers.app import build_routes
from im.protocol import CLIENT_FRAME_TYPES
from tests.helpers import Node, Response
from tests.reliability_report import record

SECTION = "Authorization sweep: other users' ids are refused, nothing stored changes"
MISSING_HEX_ID = "ffffffffffffffffffffffff"  # well-formed message/file id that names nothing
MISSING_GROUP = "0000000000000000"
WS = "/ws"

# Routes and methods that name no conversation, group, file, message or other user's object, each with
# the reason it needs no case. OPTIONS (CORS preflight) is answered the same for everyone, without a token.
EXEMPT: dict[tuple[str, str], str] = {
    (r"/api/v1/users", "POST"): "registration: public, names only the new account",
    (r"/api/v1/users/([^/]+)", "GET"): "whether a user id exists, as a send or friend request tells anyway",
    (r"/api/v1/tokens", "POST"): "login: credentials, covered by tests/handlers/test_accounts.py",
    (r"/api/v1/tokens", "DELETE"): "sign out: revokes the caller's own tokens only (device or all)",
    (r"/api/v1/presence", "GET"): "presence is visible to every signed-in user by design",
    (r"/api/v1/presence/([^/]+)", "GET"): "presence by design; an unknown user reads as offline",
    (r"/api/v1/friends", "POST"): "asking someone to be friends is what the endpoint is for",
    (r"/api/v1/groups", "POST"): "creates the caller's own group",
    (r"/healthz", "GET"): "no ids, no token",
    (r"/metrics", "GET"): "no ids, no token (operators' network only)",
    (r"/api/v1/openapi.yaml", "GET"): "static document",
    (r"/api/.*", "*"): "unknown endpoints: 404 for everyone",
    (r"/(.*)", "*"): "the web client's static files",
    (WS, "auth"): "carries the caller's own token (JWT attacks: tests/handlers/test_accounts.py)",
    (WS, "ping"): "no ids",
}


@dataclass
class World:
    """Alice owns group ``group`` with bob and carol (an admin) and wrote to bob; mallory is in none of it."""

    node: Node
    alice: str
    bob: str
    carol: str
    mallory: str
    group: str
    direct_msg: str
    group_msg: str
    file_id: str
    bob_head: int


Check = Callable[[World], Awaitable[None]]
CASES: dict[tuple[str, str], list[Check]] = {}


def case(route: str, method: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        CASES.setdefault((route, method), []).append(check)
        return check

    return register


# -- outcomes -------------------------------------------------------------------------------------------

def _masked(message: str) -> str:
    """An error message with the ids it quotes masked, so two refusals compare equal."""
    return re.sub(r"'[^']*'", "'…'", message)


def refusal(response: Response) -> tuple[int, str | None, str | None, str]:
    error = response.body.get("error", {}) if isinstance(response.body, dict) else {}
    return response.status, error.get("code"), error.get("field"), _masked(error.get("message", ""))


def assert_hidden(attempt: Response, missing: Response) -> None:
    """Refused exactly as if the object did not exist."""
    assert attempt.status in (403, 404), (attempt.status, attempt.body)
    assert refusal(attempt) == refusal(missing), (attempt.body, missing.body)


def assert_forbidden(attempt: Response, code: str = "not_allowed") -> None:
    assert (attempt.status, attempt.error_code) == (403, code), (attempt.status, attempt.body)


def frame_refusal(frame: dict[str, Any]) -> tuple[str, str | None, str | None, str]:
    return frame.get("t", ""), frame.get("code"), frame.get("field"), _masked(str(frame.get("message", "")))


async def req(w: World, method: str, path: str, token: str, **options: Any) -> Response:
    return await w.node.request(method, path, token=token, **options)


def bodies(messages: list[dict[str, Any]]) -> list[Any]:
    return [m["body"] for m in messages]


# -- sending ---------------------------------------------------------------------------------------------

@case(r"/api/v1/messages", "POST")
async def send_into_someone_elses_group(w: World) -> None:
    def send(group: str) -> Awaitable[Response]:
        return req(w, "POST", "/api/v1/messages", w.mallory,
                   json_body={"group": group, "body": "let me in", "client_msg_id": f"m-{group}"})

    assert_hidden(await send(w.group), await send(MISSING_GROUP))


@case(r"/api/v1/messages", "POST")
async def send_someone_elses_file(w: World) -> None:
    for to in ("bob", "alice"):  # into the file's own conversation's member, and into her own one
        def send(file_id: str, to: str = to) -> Awaitable[Response]:
            return req(w, "POST", "/api/v1/messages", w.mallory, json_body={
                "to": to, "kind": "file", "body": file_id, "client_msg_id": f"f-{to}-{file_id}"})

        assert_hidden(await send(w.file_id), await send(MISSING_HEX_ID))


# -- the caller's own inbox -------------------------------------------------------------------------------

@case(r"/api/v1/inbox", "GET")
async def pull_shows_only_ones_own_inbox(w: World) -> None:
    for after in (0, w.bob_head - 1):
        response = await w.node.pull(w.mallory, after=after, limit=500)
        assert response.status == 200, response.body
        assert not [m for m in response.body["messages"] if m["from"] != "mallory"], response.body


@case(r"/api/v1/poll", "GET")
async def poll_shows_only_ones_own_inbox(w: World) -> None:
    response = await req(w, "GET", "/api/v1/poll", w.mallory, query={"after": 0, "timeout": 0})
    assert response.status == 200, response.body
    assert not [m for m in response.body["messages"] if m["from"] != "mallory"], response.body


@case(r"/api/v1/inbox/ack", "POST")
async def ack_cannot_reach_another_inbox(w: World) -> None:
    # Beyond mallory's own head (where bob's inbox is): refused as invalid, bob's entries untouched.
    response = await req(w, "POST", "/api/v1/inbox/ack", w.mallory, json_body={"upto": w.bob_head})
    assert (response.status, response.error_code, response.body["error"].get("field")) == (400, "invalid", "upto")


@case(r"/api/v1/conversations", "GET")
async def conversation_list_is_ones_own(w: World) -> None:
    response = await req(w, "GET", "/api/v1/conversations", w.mallory)
    assert response.status == 200, response.body
    listed = [c["conv"] for c in response.body["conversations"]]
    # Only conversations mallory is in (she may have written to someone herself), never alice's group.
    assert all(conv.startswith("d:") and "mallory" in conv.split(":") for conv in listed), listed


# -- friends ----------------------------------------------------------------------------------------------

@case(r"/api/v1/friends", "GET")
async def friend_list_is_ones_own(w: World) -> None:
    response = await req(w, "GET", "/api/v1/friends", w.mallory)
    assert response.status == 200 and response.body == {"friends": []}, response.body


@case(r"/api/v1/friends/([^/]+)", "DELETE")
async def unfriend_others(w: World) -> None:
    for other in ("alice", "bob"):  # alice and bob have a pending request between them
        assert_hidden(await req(w, "DELETE", f"/api/v1/friends/{other}", w.mallory),
                      await req(w, "DELETE", "/api/v1/friends/nobody", w.mallory))


@case(r"/api/v1/friends/([^/]+)/accept", "POST")
async def accept_a_request_made_to_someone_else(w: World) -> None:
    assert_hidden(await req(w, "POST", "/api/v1/friends/bob/accept", w.mallory),
                  await req(w, "POST", "/api/v1/friends/nobody/accept", w.mallory))


@case(r"/api/v1/friends/([^/]+)/decline", "POST")
async def decline_a_request_made_to_someone_else(w: World) -> None:
    assert_hidden(await req(w, "POST", "/api/v1/friends/bob/decline", w.mallory),
                  await req(w, "POST", "/api/v1/friends/nobody/decline", w.mallory))


# -- groups -------------------------------------------------------------------------------------------------

@case(r"/api/v1/groups", "GET")
async def group_list_is_ones_own(w: World) -> None:
    response = await req(w, "GET", "/api/v1/groups", w.mallory)
    assert response.status == 200 and response.body == {"groups": []}, response.body


async def _group_call(w: World, method: str, suffix: str, token: str, body: Any = None) -> tuple[Response, Response]:
    """The same call on alice's group and on a group that does not exist."""
    options = {} if body is None else {"json_body": body}
    attempt = await req(w, method, f"/api/v1/groups/{w.group}{suffix}", token, **options)
    missing = await req(w, method, f"/api/v1/groups/{MISSING_GROUP}{suffix}", token, **options)
    return attempt, missing


@case(r"/api/v1/groups/([^/]+)", "GET")
async def read_someone_elses_group(w: World) -> None:
    assert_hidden(*await _group_call(w, "GET", "", w.mallory))


@case(r"/api/v1/groups/([^/]+)", "PATCH")
async def rename_someone_elses_group(w: World) -> None:
    assert_hidden(*await _group_call(w, "PATCH", "", w.mallory, {"name": "pwned"}))
    assert_forbidden(await req(w, "PATCH", f"/api/v1/groups/{w.group}", w.bob, json_body={"name": "mine"}))


@case(r"/api/v1/groups/([^/]+)/members", "GET")
async def list_members_of_someone_elses_group(w: World) -> None:
    assert_hidden(*await _group_call(w, "GET", "/members", w.mallory))


@case(r"/api/v1/groups/([^/]+)/members", "POST")
async def join_someone_elses_group(w: World) -> None:
    assert_hidden(*await _group_call(w, "POST", "/members", w.mallory, {"members": ["mallory"]}))
    assert_forbidden(await req(w, "POST", f"/api/v1/groups/{w.group}/members", w.bob,
                               json_body={"members": ["mallory"]}))


@case(r"/api/v1/groups/([^/]+)/members/([^/]+)", "DELETE")
async def remove_members_of_someone_elses_group(w: World) -> None:
    for user in ("bob", "alice", "mallory"):
        assert_hidden(*await _group_call(w, "DELETE", f"/members/{user}", w.mallory))
    assert_forbidden(await req(w, "DELETE", f"/api/v1/groups/{w.group}/members/carol", w.bob))


@case(r"/api/v1/groups/([^/]+)/leave", "POST")
async def leave_a_group_one_is_not_in(w: World) -> None:
    assert_hidden(*await _group_call(w, "POST", "/leave", w.mallory))


@case(r"/api/v1/groups/([^/]+)/admins/([^/]+)", "PUT")
async def appoint_admins_in_someone_elses_group(w: World) -> None:
    assert_hidden(*await _group_call(w, "PUT", "/admins/mallory", w.mallory))
    assert_hidden(*await _group_call(w, "PUT", "/admins/bob", w.mallory))
    assert_forbidden(await req(w, "PUT", f"/api/v1/groups/{w.group}/admins/bob", w.bob))


@case(r"/api/v1/groups/([^/]+)/admins/([^/]+)", "DELETE")
async def dismiss_admins_in_someone_elses_group(w: World) -> None:
    assert_hidden(*await _group_call(w, "DELETE", "/admins/carol", w.mallory))
    assert_forbidden(await req(w, "DELETE", f"/api/v1/groups/{w.group}/admins/carol", w.bob))


# -- history, receipts, files -----------------------------------------------------------------------------

@case(r"/api/v1/conversations/([^/]+)/messages", "GET")
async def read_someone_elses_history(w: World) -> None:
    for conv, missing in (("d:alice:bob", "d:nobody:zed"), (f"g:{w.group}", f"g:{MISSING_GROUP}")):
        assert_hidden(await req(w, "GET", f"/api/v1/conversations/{conv}/messages", w.mallory),
                      await req(w, "GET", f"/api/v1/conversations/{missing}/messages", w.mallory))
    for before in (w.direct_msg, w.group_msg):  # paging from another conversation's message
        response = await req(w, "GET", "/api/v1/conversations/d:alice:mallory/messages", w.mallory,
                             query={"before": before})
        assert response.status == 200 and response.body["messages"] == [], response.body


@case(r"/api/v1/messages/([^/]+)/receipts", "GET")
async def read_receipts_of_someone_elses_message(w: World) -> None:
    missing = await req(w, "GET", f"/api/v1/messages/{MISSING_HEX_ID}/receipts", w.mallory)
    for msg_id in (w.group_msg, w.direct_msg):
        assert_hidden(await req(w, "GET", f"/api/v1/messages/{msg_id}/receipts", w.mallory), missing)


@case(r"/api/v1/receipts/read", "POST")
async def mark_someone_elses_messages_read(w: World) -> None:
    attempt = await req(w, "POST", "/api/v1/receipts/read", w.mallory,
                        json_body={"msg_ids": [w.direct_msg, w.group_msg]})
    missing = await req(w, "POST", "/api/v1/receipts/read", w.mallory, json_body={"msg_ids": [MISSING_HEX_ID]})
    assert attempt.status == missing.status == 200, (attempt.body, missing.body)
    assert attempt.body == missing.body == {"msg_ids": []}


@case(r"/api/v1/files", "POST")
async def upload_into_someone_elses_group(w: World) -> None:
    def upload(group: str) -> Awaitable[Response]:
        return req(w, "POST", "/api/v1/files", w.mallory, raw_body=b"payload", query={"group": group},
                   headers={"Content-Type": "text/plain"})

    assert_hidden(await upload(w.group), await upload(MISSING_GROUP))


@case(r"/api/v1/files/([^/]+)", "GET")
async def download_someone_elses_file(w: World) -> None:
    assert_hidden(await req(w, "GET", f"/api/v1/files/{w.file_id}", w.mallory),
                  await req(w, "GET", f"/api/v1/files/{MISSING_HEX_ID}", w.mallory))


# -- WebSocket frames ---------------------------------------------------------------------------------------

@case(WS, "send")
async def ws_send_into_someone_elses_group_or_file(w: World) -> None:
    async with w.node.ws(w.mallory) as ws:
        attempts = [
            ({"group": w.group, "body": "x"}, {"group": MISSING_GROUP, "body": "x"}),
            ({"to": "bob", "kind": "file", "body": w.file_id}, {"to": "bob", "kind": "file", "body": MISSING_HEX_ID}),
        ]
        for n, (attempt, missing) in enumerate(attempts):
            got = await ws.call({"t": "send", "client_msg_id": f"ws-a{n}", **attempt})
            expected = await ws.call({"t": "send", "client_msg_id": f"ws-m{n}", **missing})
            assert got["t"] == "error" and frame_refusal(got) == frame_refusal(expected), (got, expected)


@case(WS, "read")
async def ws_mark_someone_elses_messages_read(w: World) -> None:
    async with w.node.ws(w.mallory) as ws:
        got = await ws.call({"t": "read", "msg_ids": [w.direct_msg, w.group_msg]})
        assert got == {"t": "read", "ok": True, "msg_ids": []}, got


@case(WS, "pull")
async def ws_pull_shows_only_ones_own_inbox(w: World) -> None:
    async with w.node.ws(w.mallory) as ws:
        for after in (0, w.bob_head - 1):
            got = await ws.pull(after=after, limit=500)
            assert got["t"] == "msgs" and not [m for m in got["messages"] if m["from"] != "mallory"], got


@case(WS, "ack")
async def ws_ack_cannot_reach_another_inbox(w: World) -> None:
    async with w.node.ws(w.mallory) as ws:
        got = await ws.call({"t": "ack", "upto": w.bob_head})
        assert (got["t"], got.get("code"), got.get("field")) == ("error", "invalid", "upto"), got


# -- the sweep ----------------------------------------------------------------------------------------------

def _methods(handler: type) -> list[str]:
    """The HTTP methods a handler implements (its own, not tornado's 405 defaults); OPTIONS aside."""
    return [m for m in handler.SUPPORTED_METHODS  # type: ignore[attr-defined]
            if m != "OPTIONS" and getattr(handler, m.lower()) is not getattr(tornado.web.RequestHandler, m.lower())]


def required_keys(settings: Settings) -> set[tuple[str, str]]:
    """Every (route, method) of the app and every (``/ws``, frame type) a client may send."""
    keys: set[tuple[str, str]] = set()
    for route in build_routes(None, settings):  # type: ignore[arg-type]
        pattern, handler = route[0], route[1]
        if issubclass(handler, tornado.websocket.WebSocketHandler):
            keys |= {(pattern, kind) for kind in CLIENT_FRAME_TYPES}
        elif (pattern, "*") in EXEMPT:
            keys.add((pattern, "*"))
        else:
            keys |= {(pattern, method) for method in _methods(handler)}
    return keys


def test_every_route_method_and_frame_has_a_case(settings: Settings) -> None:
    required = required_keys(settings)
    covered = set(CASES) | set(EXEMPT)
    assert required - covered == set(), "endpoints or frames without an authorization case"
    assert covered - required == set(), "cases for endpoints or frames that no longer exist"
    assert not set(CASES) & set(EXEMPT)


async def snapshot(node: Node) -> dict[str, list[dict[str, Any]]]:
    """Every stored document of the test's database, collection by collection."""
    db = node.service.store.db
    return {name: await db[name].find({}).sort("_id", 1).to_list(None)
            for name in sorted(await db.list_collection_names())}


async def build_world(node: Node) -> World:
    alice, bob, carol, mallory = [await node.user(u) for u in ("alice", "bob", "carol", "mallory")]
    created = await node.request("POST", "/api/v1/groups", token=alice,
                                 json_body={"name": "secret", "members": ["bob", "carol"]})
    assert created.status == 201, created.body
    group = created.body["group"]
    assert (await node.request("PUT", f"/api/v1/groups/{group}/admins/carol", token=alice)).status == 200
    assert (await node.request("POST", "/api/v1/friends", token=bob, json_body={"user": "alice"})).status == 201
    direct = await node.send(alice, "bob", "for bob only", client_msg_id="d1")
    in_group = await node.request("POST", "/api/v1/messages", token=alice,
                                  json_body={"group": group, "body": "members only", "client_msg_id": "g1"})
    upload = await node.request("POST", "/api/v1/files", token=alice, raw_body=b"private bytes",
                                query={"to": "bob", "name": "secret.txt"}, headers={"Content-Type": "text/plain"})
    assert direct.status == in_group.status == upload.status == 201, (direct.body, in_group.body, upload.body)
    with_file = await node.request("POST", "/api/v1/messages", token=alice, json_body={
        "to": "bob", "kind": "file", "body": upload.body["file_id"], "client_msg_id": "f1"})
    assert with_file.status == 201, with_file.body
    # Mallory's own inbox exists (a first pull may create it) and she has a conversation with alice.
    assert (await node.send(mallory, "alice", "hi alice", client_msg_id="m1")).status == 201
    assert (await node.pull(mallory)).status == 200
    bob_head = (await node.pull(bob)).body["head"]
    assert bob_head >= 3
    return World(node, alice, bob, carol, mallory, group, direct.body["msg_id"], in_group.body["msg_id"],
                 upload.body["file_id"], bob_head)


async def test_other_users_ids_are_refused_and_nothing_changes(node: Node) -> None:
    world = await build_world(node)
    failures: list[str] = []
    tried = 0
    for (route, method), checks in sorted(CASES.items()):
        for check in checks:
            tried += 1
            before = await snapshot(node)
            try:
                await check(world)
            except AssertionError as error:
                failures.append(f"{method} {route} ({check.__name__}): {error}")
                continue
            after = await snapshot(node)
            changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
            if changed:
                failures.append(f"{method} {route} ({check.__name__}): stored change in {changed}")
    # The owners still have everything: nothing was trimmed, moved or taken over.
    bob_inbox = (await node.pull(world.bob)).body["messages"]
    assert {"for bob only", "members only"} <= {m["body"] for m in bob_inbox if isinstance(m["body"], str)}
    group = await node.request("GET", f"/api/v1/groups/{world.group}", token=world.alice)
    assert (group.body["owner"], group.body["members"]) == ("alice", ["alice", "bob", "carol"]), group.body
    record(SECTION, "outsider and non-manager attempts, single node", {
        "routes and frames": len(CASES), "exempt (no ids)": len(EXEMPT), "cases": tried,
        "refused or scoped": tried - len(failures), "failures": len(failures),
    })
    assert not failures, "\n".join(failures)
