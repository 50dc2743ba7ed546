"""Chats with people who do not exist, messages the server refuses for good, and closing a chat.

A new chat's name is checked (GET /api/v1/users/{user}) before the chat opens; a send refused for
good shows why and offers Remove rather than a Retry that cannot succeed; a chat can be closed, and
stays closed until something new arrives; chats with nobody kept from before are dropped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from tests.helpers import PASSWORD, Node, eventually
from tests.web.support import UI_TIMEOUT_MS, WebUser, screenshots


def without_lookup_404s(errors: list[str]) -> list[str]:
    """Chromium logs every 404 answer as a console error; a "no such user" answer is one by design."""
    return [e for e in errors if "404" not in e]


async def test_a_chat_with_an_unknown_name_is_not_opened(node: Node, browser: Any, artifacts_dir: Path) -> None:
    await node.register("nina")
    await node.register("bob")
    nina = await WebUser.open(browser, node.base_url, "nina")
    try:
        await nina.sign_in(PASSWORD)
        box = nina.page.get_by_label("Start a chat with username")
        await box.fill("nobody")
        await box.press("Enter")
        await expect(nina.page.locator("#new-chat-error")).to_have_text("There is no user named “nobody”.",
                                                                          timeout=UI_TIMEOUT_MS)
        await expect(nina.page.locator("#chat-header")).to_be_hidden()
        await expect(nina.conversation("nobody")).to_have_count(0)
        await expect(box).to_have_value("nobody")  # left for the user to correct
        await screenshots(nina.page, artifacts_dir, "unknown-user-error")

        await box.fill("bob")
        await box.press("Enter")
        await expect(nina.page.locator("#chat-title")).to_have_text("bob", timeout=UI_TIMEOUT_MS)
        await expect(nina.page.locator("#new-chat-error")).to_have_text("")
        assert without_lookup_404s(nina.console_errors) == []
    finally:
        await nina.close()


async def test_a_message_refused_for_good_offers_remove_not_retry(node: Node, browser: Any,
                                                                  artifacts_dir: Path) -> None:
    olga = await node.user("olga")
    await node.register("pete")
    created = await node.request("POST", "/api/v1/groups", token=olga,
                                 json_body={"name": "Book club", "members": ["pete"]})
    assert created.status == 201, created.body
    group = created.body["group"]
    assert (await node.request("POST", "/api/v1/messages", token=olga, json_body={
        "group": group, "body": "welcome!", "client_msg_id": "welcome-1"})).status == 201
    pete = await WebUser.open(browser, node.base_url, "pete", transport="ws")
    try:
        await pete.sign_in(PASSWORD)
        await pete.open_chat("Book club")
        await pete.expect_messages(["welcome!"])
        removed = await node.request("DELETE", f"/api/v1/groups/{group}/members/pete", token=olga)
        assert removed.status in (200, 204), removed.body

        await pete.say("am I still in?")
        failed = pete.page.locator('#message-list li.msg.mine[data-state="failed"]')
        await expect(failed).to_have_count(1, timeout=UI_TIMEOUT_MS)
        await expect(failed.locator(".fail")).to_contain_text("not a member of this group any more")
        await expect(failed.get_by_role("button", name="Retry")).to_have_count(0)
        await screenshots(pete.page, artifacts_dir, "refused-for-good")
        await failed.get_by_role("button", name="Remove").click()
        await pete.expect_messages(["welcome!"])
        await expect(failed).to_have_count(0)

        await pete.page.get_by_role("button", name="Close chat").click()
        await expect(pete.conversation("Book club")).to_have_count(0)
        await pete.page.reload()
        await expect(pete.page.locator("#connection-status")).to_have_attribute("data-state", "live",
                                                                                timeout=UI_TIMEOUT_MS)
        await expect(pete.conversation("Book club")).to_have_count(0)
        assert pete.console_errors == []
    finally:
        await pete.close()


async def test_a_closed_chat_stays_closed_until_a_new_message(node: Node, browser: Any) -> None:
    sam = await node.user("sam")
    await node.register("dora")
    assert (await node.send(sam, "dora", "first")).status == 201
    dora = await WebUser.open(browser, node.base_url, "dora")
    try:
        await dora.sign_in(PASSWORD)
        await dora.open_chat("sam")
        await dora.expect_messages(["first"])
        await dora.page.get_by_role("button", name="Close chat").click()
        await expect(dora.conversation("sam")).to_have_count(0)
        await expect(dora.page.locator("#empty-chat")).to_be_visible()

        await dora.page.reload()
        await expect(dora.page.locator("#connection-status")).to_have_attribute("data-state", "live",
                                                                                timeout=UI_TIMEOUT_MS)
        await expect(dora.conversation("sam")).to_have_count(0)

        assert (await node.send(sam, "dora", "are you there?")).status == 201
        await expect(dora.conversation("sam")).to_have_accessible_name("Chat with sam, 1 unread",
                                                                       timeout=UI_TIMEOUT_MS)
        await dora.open_chat("sam")
        await expect(dora.bubbles().last).to_have_text("are you there?", timeout=UI_TIMEOUT_MS)
        assert dora.console_errors == []
    finally:
        await dora.close()


SEED_PHANTOM = """
({ user, now }) => {
  localStorage.setItem("im.device", JSON.stringify("web-seeded"));
  localStorage.setItem(`im.chats.${user}.web-seeded`, JSON.stringify({ conversations: [
    { id: `d:${user}:nobody`, title: null, unread: 0, lastActivity: now, messages: [] } ] }));
  localStorage.setItem(`im.outbox.${user}`, JSON.stringify([
    { client_msg_id: "wseeded1", to: "nobody", group: null, conv: `d:${user}:nobody`, body: "anyone home?",
      kind: "text", state: "failed", attempts: 1, created: now } ]));
}
"""


async def test_chats_with_nobody_kept_from_before_are_dropped(node: Node, browser: Any) -> None:
    bob = await node.user("bob")
    await node.register("nina")
    assert (await node.send(bob, "nina", "hi nina")).status == 201
    nina = await WebUser.open(browser, node.base_url, "nina")
    try:
        await nina.page.evaluate(SEED_PHANTOM, {"user": "nina", "now": int(time.time() * 1000)})
        await nina.sign_in(PASSWORD)
        await expect(nina.conversation("bob")).to_be_visible(timeout=UI_TIMEOUT_MS)
        await expect(nina.conversation("nobody")).to_have_count(0, timeout=UI_TIMEOUT_MS)
        await eventually(lambda: nina.page.evaluate("() => localStorage.getItem('im.outbox.nina')"),
                         until=lambda saved: saved == "[]", what="the phantom's unsent message dropped")

        await nina.page.reload()
        await expect(nina.conversation("bob")).to_be_visible(timeout=UI_TIMEOUT_MS)
        await expect(nina.conversation("nobody")).to_have_count(0)
        assert without_lookup_404s(nina.console_errors) == []
    finally:
        await nina.close()
