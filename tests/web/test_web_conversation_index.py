"""A fresh device lists every conversation at once (GET /api/v1/conversations), with no new message needed.

Another device of the same person has already received everything, so the server trimmed the inbox:
the new browser finds nothing in its inbox and must draw its list from the conversation index: one-to-one
chats and groups, each with its last message, unread count and read marks, newest first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from handlers.openapi import OPENAPI_PATH
from tests.helpers import PASSWORD, Node, eventually
from tests.web.support import UI_TIMEOUT_MS, WebUser, screenshots

PAGE_OF_TWO = 2  # the test asks for tiny pages, so the client must follow next_before


async def read(node: Node, token: str, *msg_ids: str) -> None:
    response = await node.request("POST", "/api/v1/receipts/read", token=token, json_body={"msg_ids": list(msg_ids)})
    assert response.status == 200, response.body


async def take_everything(node: Node, token: str) -> None:
    """The device behind ``token`` pulls and acknowledges its whole inbox, so the server trims it."""
    head = 0
    while True:
        pulled = await node.pull(token, after=head, limit=100)
        head = pulled.body["next"]
        if not pulled.body["more"]:
            break
    assert (await node.ack(token, head)).status == 200


async def unread_on_server(node: Node, token: str, conv: str) -> int | None:
    listed = await node.request("GET", "/api/v1/conversations", token=token)
    return next((c["unread"] for c in listed.body["conversations"] if c["conv"] == conv), None)


async def small_pages(route: Any) -> None:
    await route.continue_(url=route.request.url.replace("limit=100", f"limit={PAGE_OF_TWO}"))


async def test_a_fresh_device_lists_every_conversation_with_its_state(node: Node, browser: Any,
                                                                      artifacts_dir: Path) -> None:
    if "\n  /api/v1/conversations:" not in OPENAPI_PATH.read_text():
        pytest.skip("the server does not list conversations yet (GET /api/v1/conversations)")
    bob, carol, alice = await node.user("bob"), await node.user("carol"), await node.user("alice")
    dan_phone = await node.user("dan", device="phone")
    for text in ("hi dan", "are you coming?"):
        assert (await node.send(bob, "dan", text)).status == 201
    dinner = await node.send(carol, "dan", "dinner?")
    await read(node, dan_phone, dinner.body["msg_id"])
    reply = await node.send(dan_phone, "carol", "see you at 8")
    await read(node, carol, reply.body["msg_id"])
    group = await node.request("POST", "/api/v1/groups", token=alice,
                               json_body={"name": "Hikers", "members": ["dan", "carol"]})
    assert group.status == 201
    assert (await node.request("POST", "/api/v1/messages", token=alice, json_body={
        "group": group.body["group"], "body": "trail at 9", "client_msg_id": "trail-1"})).status == 201
    await take_everything(node, dan_phone)

    laptop = await WebUser.open(browser, node.base_url, "dan")
    index_requests: list[str] = []
    laptop.page.on("request", lambda r: index_requests.append(r.url) if "/api/v1/conversations?" in r.url else None)
    await laptop.page.route("**/api/v1/conversations?*", small_pages)
    try:
        await laptop.sign_in(PASSWORD)
        await laptop.expect_conversation_list(
            ["Group Hikers, 1 unread", "Chat with carol", "Chat with bob, 2 unread"])
        await expect(laptop.page.locator("#conversation-list .conv-preview")).to_have_text(
            ["alice: trail at 9", "You: see you at 8", "are you coming?"])
        assert len(index_requests) == 2 and "before=" in index_requests[1]  # followed next_before
        assert laptop.sends == 0
        await screenshots(laptop.page, artifacts_dir, "fresh-device-list")

        await laptop.open_chat("carol")
        await laptop.expect_messages(["dinner?", "see you at 8"])
        await expect(laptop.page.locator("#message-list li.msg.mine")).to_have_attribute(
            "data-state", "read", timeout=UI_TIMEOUT_MS)
        await laptop.open_chat("bob")
        await laptop.expect_messages(["hi dan", "are you coming?"])
        await expect(laptop.conversation("bob")).to_have_accessible_name("Chat with bob")
        await eventually(lambda: unread_on_server(node, dan_phone, "d:bob:dan"), until=lambda n: n == 0,
                         timeout_secs=UI_TIMEOUT_MS / 1000, what="the read reported to the server")
        await screenshots(laptop.page, artifacts_dir, "fresh-device-chat")
        assert laptop.console_errors == []
    finally:
        await laptop.close()

    tablet = await WebUser.open(browser, node.base_url, "dan")
    try:
        await tablet.sign_in(PASSWORD)
        await tablet.expect_conversation_list(["Group Hikers, 1 unread", "Chat with carol", "Chat with bob"])
        assert tablet.console_errors == []
    finally:
        await tablet.close()


async def test_a_fresh_device_shows_who_read_my_group_messages(node: Node, browser: Any) -> None:
    """Receipts that reached another device are asked from the server when the group opens."""
    if "\n  /api/v1/conversations:" not in OPENAPI_PATH.read_text():
        pytest.skip("the server does not list conversations yet (GET /api/v1/conversations)")
    olga_phone = await node.user("olga", device="phone")
    pete, quinn = await node.user("pete"), await node.user("quinn")
    group = await node.request("POST", "/api/v1/groups", token=olga_phone,
                               json_body={"name": "Crew", "members": ["pete", "quinn"]})
    assert group.status == 201
    sent = []
    for text in ("boat at 10", "bring snacks"):
        reply = await node.request("POST", "/api/v1/messages", token=olga_phone, json_body={
            "group": group.body["group"], "body": text, "client_msg_id": f"crew-{len(sent)}"})
        assert reply.status == 201
        sent.append(reply.body["msg_id"])
    await read(node, pete, *sent)
    await read(node, quinn, sent[0])
    await take_everything(node, olga_phone)

    laptop = await WebUser.open(browser, node.base_url, "olga")
    try:
        await laptop.sign_in(PASSWORD)
        await laptop.open_chat("Crew")
        await laptop.expect_messages(["boat at 10", "bring snacks"])
        mine = laptop.page.locator("#message-list li.msg.mine")
        for message in (mine.nth(0), mine.nth(1)):
            await expect(message).to_have_attribute("data-state", "read", timeout=UI_TIMEOUT_MS)
        marks = mine.locator(".mark")
        await expect(marks.nth(0)).to_have_attribute("title", "read by pete, quinn")
        await expect(marks.nth(1)).to_have_attribute("title", "read by pete")
        assert laptop.console_errors == []
    finally:
        await laptop.close()
