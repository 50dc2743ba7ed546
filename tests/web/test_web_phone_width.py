"""Nothing reaches past the right edge of a phone (390 px), in the light and the dark theme.

Long unbroken words, long URLs, long names and long previews must wrap or be cut with an ellipsis;
the page never scrolls sideways and every control (sign out, start chat, new group, timestamps, send)
stays on screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import expect

from tests.helpers import PASSWORD, Node
from tests.web.support import PHONE, UI_TIMEOUT_MS, WebUser, horizontal_overflow, screenshots

LONG_WORD = "Supercalifragilistic" * 12
LONG_URL = "https://example.com/" + "a-very-long-path-segment/" * 10 + "?q=" + "x" * 80
LONG_NAME = "a" * 16 + "-long-username-x"  # 32 characters, the most a user id may have

LIST_CONTROLS = [".me", ".me button", "#new-chat-form button", "#new-group-button", ".conv", ".conv-time",
                 ".conv .badge", "#online-panel button"]
CHAT_CONTROLS = ["#chat-header", "#chat-header button", ".bubble", ".meta time", "#send-button",
                 "#attach-label"]


async def expect_nothing_overflows(page: Any, selectors: list[str]) -> None:
    report = await horizontal_overflow(page, selectors)
    assert report["scrollWidth"] <= report["width"], report
    assert report["outside"] == [], report


async def test_long_words_and_names_stay_inside_a_phone_screen(node: Node, browser: Any,
                                                                artifacts_dir: Path) -> None:
    sender = await node.user(LONG_NAME)
    await node.register("mona")
    for text in (LONG_WORD, f"look: {LONG_URL}", "short one"):
        assert (await node.send(sender, "mona", text)).status == 201
    mona = await WebUser.open(browser, node.base_url, "mona", viewport=PHONE)
    try:
        await mona.sign_in(PASSWORD)
        await expect(mona.conversation(LONG_NAME)).to_be_visible(timeout=UI_TIMEOUT_MS)
        await mona.page.get_by_role("button", name="New group").click()
        await mona.page.get_by_label("Group name").fill("Planning " + "the-very-long-weekend-hike" * 2)
        await mona.page.get_by_label("Members (usernames, comma separated)").fill(LONG_NAME)
        await mona.page.get_by_role("button", name="Create group").click()
        await mona.say(LONG_WORD)
        await mona.page.get_by_role("button", name="Back to conversations").click()

        for theme in ("light", "dark"):
            await mona.page.emulate_media(color_scheme=theme)
            await expect_nothing_overflows(mona.page, LIST_CONTROLS)
        await screenshots(mona.page, artifacts_dir, "phone-width-list")

        await mona.open_chat(LONG_NAME)
        await mona.expect_messages([LONG_WORD, f"look: {LONG_URL}", "short one"])
        for theme in ("light", "dark"):
            await mona.page.emulate_media(color_scheme=theme)
            await expect_nothing_overflows(mona.page, CHAT_CONTROLS)
        await screenshots(mona.page, artifacts_dir, "phone-width-chat")
        assert mona.console_errors == []
    finally:
        await mona.close()
