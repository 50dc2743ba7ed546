"""Pictures, links and desktop notifications in the web client.

- A picture sent as a file shows inline as a thumbnail; a click opens it full size.
- http, https and mailto addresses in a message become links that open in a new tab without the
  opener or the referrer; anything else (javascript:, data:, markup) stays text, shown as typed.
- Desktop notifications, once switched on (the permission is asked from that click), announce a
  message in a conversation that is not on screen, and a click on one opens the conversation.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from tests.helpers import PASSWORD, Node, eventually
from tests.web.support import UI_TIMEOUT_MS, WebUser, screenshots


def png(width: int, height: int) -> bytes:
    """A PNG picture of ``width`` x ``height``: a sky over a hill, so a screenshot shows it is a picture."""
    rows = []
    for y in range(height):
        row = bytearray([0])  # filter: none
        for x in range(width):
            hill = y > height * 0.6 + 25 * ((x / width - 0.5) ** 2) * 4
            row += bytes((70, 150, 90) if hill else (120 + y // 3, 170 + y // 5, 240))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


async def test_a_picture_shows_inline_and_opens_full_size(node: Node, browser: Any, artifacts_dir: Path) -> None:
    await node.register("tina")
    await node.register("uma")
    tina = await WebUser.open(browser, node.base_url, "tina", transport="ws")
    uma = await WebUser.open(browser, node.base_url, "uma", transport="longpoll")
    try:
        await tina.sign_in(PASSWORD)
        await uma.sign_in(PASSWORD)
        await tina.start_chat("uma")
        await tina.page.get_by_label("Attach file").set_input_files(
            {"name": "hike.png", "mimeType": "image/png", "buffer": png(480, 300)})
        await tina.say("the view from the top")
        for person in (tina, uma):
            if person is uma:
                await uma.open_chat("tina")
            thumbnail = person.page.get_by_role("img", name="hike.png")
            await expect(thumbnail).to_be_visible(timeout=UI_TIMEOUT_MS)
            await eventually(lambda t=thumbnail: t.evaluate("img => img.complete && img.naturalWidth"),
                             until=lambda width: width == 480, timeout_secs=UI_TIMEOUT_MS / 1000,
                             what="the thumbnail's picture")
            box = await thumbnail.bounding_box()
            assert box and box["width"] <= 260 and box["height"] <= 220  # a thumbnail, not the picture
        await expect(uma.page.get_by_role("link", name="Download hike.png")).to_be_visible()
        await screenshots(uma.page, artifacts_dir, "picture-inline")

        await uma.page.get_by_role("button", name="Open hike.png full size").click()
        viewer = uma.page.get_by_role("dialog", name="hike.png")
        await expect(viewer).to_be_visible()
        full = viewer.get_by_role("img", name="hike.png")
        box = await full.bounding_box()
        assert box and box["width"] == 480 and box["height"] == 300  # full size: it fits the window
        await screenshots(uma.page, artifacts_dir, "picture-full-size")
        await viewer.get_by_role("button", name="Close").click()
        await expect(viewer).to_be_hidden()
        assert tina.console_errors == [] and uma.console_errors == []
    finally:
        await tina.close()
        await uma.close()


HOSTILE = ("see https://example.com/a_(b)?q=1&r=2, mail mailto:ann@example.com. "
           "Not javascript:alert(1) nor data:text/html,<b>x</b> nor <img src=x onerror=alert(2)> "
           "nor JAVASCRIPT://example.com/%0aalert(3)")


async def test_links_open_safely_and_everything_else_stays_text(node: Node, browser: Any,
                                                                 artifacts_dir: Path) -> None:
    vic = await node.user("vic")
    await node.register("wes")
    assert (await node.send(vic, "wes", HOSTILE)).status == 201
    wes = await WebUser.open(browser, node.base_url, "wes")
    try:
        await wes.sign_in(PASSWORD)
        await wes.open_chat("vic")
        text = wes.bubbles().first
        await expect(text).to_have_text(HOSTILE, timeout=UI_TIMEOUT_MS)  # shown as typed, nothing parsed
        links = text.get_by_role("link")
        await expect(links).to_have_count(2)
        assert [await link.get_attribute("href") for link in await links.all()] == [
            "https://example.com/a_(b)?q=1&r=2", "mailto:ann@example.com"]
        await expect(links).to_have_text(["https://example.com/a_(b)?q=1&r=2", "mailto:ann@example.com"])
        for link in await links.all():
            assert await link.get_attribute("target") == "_blank"
            assert await link.get_attribute("rel") == "noopener noreferrer"
        assert await text.locator("img, b").count() == 0
        await screenshots(wes.page, artifacts_dir, "links")
        assert wes.console_errors == []
    finally:
        await wes.close()


# Stands in for the browser's Notification: records what the page shows. Until the page asks, the
# permission is undecided ("default"); the question goes to the real API, which the test granted to the
# context as a user would. Each question records whether it came from a user gesture.
RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  let asked = sessionStorage.getItem("asked-for-notifications") === "yes";  // a browser remembers the answer
  window.__shown = [];
  window.__asked = [];
  class RecordedNotification {
    static get permission() { return asked ? Real.permission : "default"; }
    static async requestPermission() {
      window.__asked.push({ fromGesture: navigator.userActivation.isActive });
      asked = true;
      sessionStorage.setItem("asked-for-notifications", "yes");
      return Real.requestPermission();
    }
    constructor(title, options = {}) {
      this.title = title;
      window.__shown.push({ title, body: options.body ?? null, tag: options.tag ?? null });
      window.__last = this;
    }
    close() {}
  }
  window.Notification = RecordedNotification;
})();
"""


async def shown(person: WebUser) -> list[dict[str, Any]]:
    return await person.page.evaluate("() => window.__shown")


async def test_desktop_notifications_for_conversations_not_on_screen(node: Node, browser: Any,
                                                                     artifacts_dir: Path) -> None:
    xavi = await node.user("xavi")
    yara = await node.user("yara")
    await node.register("zoe")
    assert (await node.send(yara, "zoe", "old news")).status == 201  # waiting before zoe comes: no notification
    zoe = await WebUser.open(browser, node.base_url, "zoe", transport="ws", permissions=["notifications"],
                             init_script=RECORD_NOTIFICATIONS)
    try:
        await zoe.sign_in(PASSWORD)
        toggle = zoe.page.get_by_role("button", name="Desktop notifications")
        await expect(toggle).to_have_attribute("aria-pressed", "false")
        assert (await node.send(xavi, "zoe", "before switching on")).status == 201
        await expect(zoe.conversation("xavi")).to_be_visible(timeout=UI_TIMEOUT_MS)
        assert await shown(zoe) == []  # off until the user switches them on

        await toggle.click()
        await expect(toggle).to_have_attribute("aria-pressed", "true")
        assert await zoe.page.evaluate("() => window.__asked") == [{"fromGesture": True}]
        await zoe.open_chat("yara")
        assert (await node.send(xavi, "zoe", "lunch at 1?")).status == 201
        await eventually(lambda: shown(zoe), timeout_secs=UI_TIMEOUT_MS / 1000, what="a notification")
        assert await shown(zoe) == [{"title": "xavi", "body": "lunch at 1?", "tag": "d:xavi:zoe"}]
        assert (await node.send(yara, "zoe", "on screen already")).status == 201  # the open conversation
        await zoe.expect_messages(["old news", "on screen already"])
        assert len(await shown(zoe)) == 1

        await zoe.page.evaluate("() => window.__last.onclick()")  # the user clicks the notification
        await expect(zoe.page.locator("#chat-title")).to_have_text("xavi")
        await screenshots(zoe.page, artifacts_dir, "notifications-on", widths=("desktop", "phone"))

        for pressed in ("true", "false"):  # the choice is remembered, both ways
            await zoe.page.reload()
            await expect(toggle).to_have_attribute("aria-pressed", pressed, timeout=UI_TIMEOUT_MS)
            if pressed == "true":
                await toggle.click()
        assert await zoe.page.evaluate("() => window.__asked") == []  # not asked again: the browser remembers
        assert zoe.console_errors == []
    finally:
        await zoe.close()
