"""Groups, receipts and files in the web client (each runs when the server's spec lists its API).

The client switches these features on from the server's OpenAPI document, so these tests look at the
same document: a server without an API is tested by ``test_web_client.py`` alone.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from handlers.openapi import OPENAPI_PATH
from tests.helpers import PASSWORD, Node
from tests.web.support import UI_TIMEOUT_MS, WebUser

SPEC_TEXT = OPENAPI_PATH.read_text()


def require(path: str) -> None:
    if f"\n  {path}:" not in SPEC_TEXT:
        pytest.skip(f"the server does not serve {path} yet (not in docs/openapi.yaml)")


async def test_read_marks_reach_the_sender(node: Node, browser: Any) -> None:
    """sent -> delivered -> read, as the recipient's client acknowledges and then shows the message."""
    require("/api/v1/receipts/read")
    await node.register("rita")
    await node.register("sam")
    rita = await WebUser.open(browser, node.base_url, "rita", transport="ws")
    sam = await WebUser.open(browser, node.base_url, "sam", transport="longpoll")
    try:
        await rita.sign_in(PASSWORD)
        await sam.sign_in(PASSWORD)
        await rita.start_chat("sam")
        await rita.say("did you read this?")
        mark = rita.page.locator("#message-list li.msg.mine")
        await expect(mark).to_have_attribute("data-state", "delivered", timeout=UI_TIMEOUT_MS)
        await sam.open_chat("rita")  # sam's long-poll client reports the read over REST
        await expect(mark).to_have_attribute("data-state", "read", timeout=UI_TIMEOUT_MS)

        await sam.say("yes, just now")  # and rita's WebSocket client reports it with a `read` frame
        await rita.expect_messages(["did you read this?", "yes, just now"])
        await expect(sam.page.locator("#message-list li.msg.mine")).to_have_attribute(
            "data-state", "read", timeout=UI_TIMEOUT_MS)
        assert rita.console_errors == [] and sam.console_errors == []
    finally:
        await rita.close()
        await sam.close()


async def test_group_chat_with_three_people(node: Node, browser: Any, artifacts_dir: Any) -> None:
    require("/api/v1/groups")
    for name in ("olga", "pete", "quinn"):
        assert (await node.register(name)).status == 201
    olga = await WebUser.open(browser, node.base_url, "olga", transport="ws")
    pete = await WebUser.open(browser, node.base_url, "pete", transport="longpoll")
    quinn = await WebUser.open(browser, node.base_url, "quinn")
    try:
        for person in (olga, pete, quinn):
            await person.sign_in(PASSWORD)
        page = olga.page
        await page.get_by_role("button", name="New group").click()
        await page.get_by_label("Group name").fill("Weekend hike")
        await page.get_by_label("Members (usernames, comma separated)").fill("pete, quinn")
        await page.get_by_role("button", name="Create group").click()
        await expect(page.locator("#chat-title")).to_have_text("Weekend hike", timeout=UI_TIMEOUT_MS)
        await expect(page.locator("#chat-subtitle")).to_have_text("3 members", timeout=UI_TIMEOUT_MS)

        await olga.say("who's in for Saturday?")
        await olga.say("leaving at 8")
        await expect(pete.conversation("Weekend hike")).to_have_accessible_name(
            "Group Weekend hike, 2 unread", timeout=UI_TIMEOUT_MS)
        await pete.open_chat("Weekend hike")
        await pete.expect_messages(["who's in for Saturday?", "leaving at 8"])
        await expect(pete.page.locator("#message-list .sender")).to_have_text(["olga"])
        await pete.say("me!")
        await quinn.open_chat("Weekend hike")
        await quinn.say("count me in")
        everyone = ["who's in for Saturday?", "leaving at 8", "me!", "count me in"]
        for person in (olga, pete, quinn):
            await person.expect_messages(everyone)
        await page.screenshot(path=str(artifacts_dir / "group-olga.png"))
        await page.get_by_role("button", name="Members").click()
        members = page.get_by_role("list", name="Group members").get_by_role("listitem")
        await expect(members).to_have_count(3, timeout=UI_TIMEOUT_MS)
        await expect(members.first).to_contain_text("olga")
        await expect(members.first).to_contain_text("owner")
        for person in (olga, pete, quinn):
            assert person.console_errors == []
    finally:
        for person in (olga, pete, quinn):
            await person.close()


async def test_file_send_and_download(node: Node, browser: Any, artifacts_dir: Any) -> None:
    require("/api/v1/files")
    await node.register("tina")
    await node.register("uma")
    tina = await WebUser.open(browser, node.base_url, "tina", transport="longpoll")
    uma = await WebUser.open(browser, node.base_url, "uma", transport="ws")
    try:
        await tina.sign_in(PASSWORD)
        await uma.sign_in(PASSWORD)
        await tina.start_chat("uma")
        content = b"packing list: boots, water, map\n" * 20
        await tina.page.get_by_label("Attach file").set_input_files(
            {"name": "packing.txt", "mimeType": "text/plain", "buffer": content})
        link = tina.page.get_by_role("link", name="Download packing.txt")
        await expect(link).to_be_visible(timeout=UI_TIMEOUT_MS)
        await expect(tina.page.locator('#message-list li.msg.mine[data-state="pending"]')).to_have_count(
            0, timeout=UI_TIMEOUT_MS)

        await uma.open_chat("tina")
        incoming = uma.page.get_by_role("link", name="Download packing.txt")
        await expect(incoming).to_be_visible(timeout=UI_TIMEOUT_MS)
        async with uma.page.expect_download() as info:
            await incoming.click()
        download = await info.value
        assert download.suggested_filename == "packing.txt"
        assert (await download.path()).read_bytes() == content
        await uma.page.screenshot(path=str(artifacts_dir / "file-uma.png"))
        assert tina.console_errors == [] and uma.console_errors == []
    finally:
        await tina.close()
        await uma.close()


async def test_history_fills_a_conversation_on_a_new_device(node: Node, browser: Any) -> None:
    """Messages another device already received (and the server trimmed) come from the archive."""
    require("/api/v1/conversations/{conv}/messages")
    vera = await node.user("vera")
    walt_phone = await node.user("walt", device="phone")
    for text in ("first", "second"):
        assert (await node.send(vera, "walt", text)).status == 201
    pulled = await node.pull(walt_phone)
    assert (await node.request("POST", "/api/v1/inbox/ack", token=walt_phone,
                               json_body={"upto": pulled.body["next"]})).status == 200
    walt = await WebUser.open(browser, node.base_url, "walt")
    try:
        await walt.sign_in(PASSWORD)
        await walt.start_chat("vera")
        await walt.expect_messages(["first", "second"])
        assert (await node.send(vera, "walt", "third")).status == 201
        await walt.expect_messages(["first", "second", "third"])
        assert walt.console_errors == []
    finally:
        await walt.close()


async def test_scrolling_up_loads_older_history(node: Node, browser: Any) -> None:
    require("/api/v1/conversations/{conv}/messages")
    xena = await node.user("xena")
    yuri_tablet = await node.user("yuri", device="tablet")
    texts = [f"message {i:02d}" for i in range(70)]
    for text in texts:
        assert (await node.send(xena, "yuri", text)).status == 201
    head = 0
    while True:  # the tablet takes everything, so the server trims it for every device
        pulled = await node.pull(yuri_tablet, after=head, limit=100)
        head = pulled.body["next"]
        if not pulled.body["more"]:
            break
    assert (await node.request("POST", "/api/v1/inbox/ack", token=yuri_tablet, json_body={"upto": head})).status == 200
    yuri = await WebUser.open(browser, node.base_url, "yuri")
    try:
        await yuri.sign_in(PASSWORD)
        await yuri.start_chat("xena")
        await yuri.expect_messages(texts[-50:])  # the newest page
        await yuri.page.locator("#message-list").evaluate("el => { el.scrollTop = 0; }")
        await yuri.expect_messages(texts)  # and the rest, in order, once
        assert yuri.console_errors == []
    finally:
        await yuri.close()
