"""A person using the web client in one browser context, as the tests drive it.

Everything goes through the page as a user would (labels and roles, typing, pressing Enter); the
helper also records what the page did on the wire (WebSocket opened? long-polls made?) and every
console error or uncaught exception, so tests can assert the transport and a clean console.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Page, expect

UI_TIMEOUT_MS = 20_000


@dataclass
class WebUser:
    context: BrowserContext
    page: Page
    name: str
    console_errors: list[str] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)
    polls: int = 0
    sends: int = 0

    @classmethod
    async def open(cls, browser: Any, base_url: str, name: str, *, transport: str | None = None,
                   viewport: dict[str, int] | None = None, permissions: list[str] | None = None,
                   init_script: str | None = None) -> WebUser:
        """A new browser context (a device of its own) on the client's page; ``permissions`` are granted
        to it and ``init_script`` runs in the page before the client's own scripts."""
        context = await browser.new_context(viewport=viewport or {"width": 1100, "height": 720},
                                            permissions=permissions or [])
        if init_script:
            await context.add_init_script(init_script)
        page = await context.new_page()
        user = cls(context, page, name)
        page.on("console", lambda msg: user.console_errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: user.console_errors.append(f"uncaught: {exc}"))
        page.on("websocket", lambda ws: user.websockets.append(ws.url))
        page.on("request", user._count_request)
        query = f"?transport={transport}" if transport else ""
        await page.goto(f"{base_url}/{query}")
        return user

    def _count_request(self, request: Any) -> None:
        if "/api/v1/poll" in request.url:
            self.polls += 1
        if request.url.endswith("/api/v1/messages") and request.method == "POST":
            self.sends += 1

    async def sign_in(self, password: str, *, register: bool = False) -> None:
        page = self.page
        if register:
            await page.get_by_role("tab", name="Create account").click()
        await page.get_by_label("Username", exact=True).fill(self.name)
        await page.get_by_label("Password", exact=True).fill(password)
        await page.locator("#auth-submit").click()
        await expect(page.locator("#me-name")).to_have_text(self.name, timeout=UI_TIMEOUT_MS)
        await expect(page.get_by_role("status").first).to_have_attribute("data-state", "live",
                                                                          timeout=UI_TIMEOUT_MS)

    async def transport(self) -> str:
        return await self.page.locator("#connection-status").get_attribute("data-transport") or ""

    async def start_chat(self, peer: str) -> None:
        await self.page.get_by_label("Start a chat with username").fill(peer)
        await self.page.get_by_label("Start a chat with username").press("Enter")
        await expect(self.page.locator("#chat-title")).to_have_text(peer, timeout=UI_TIMEOUT_MS)

    def conversation(self, title: str):
        """The entry of a conversation in the sidebar list (its accessible name carries the unread count)."""
        return self.page.get_by_role("list", name="Conversation list").get_by_role(
            "button", name=re.compile(rf"^(Chat with|Group) {re.escape(title)}(,|$)"))

    async def expect_conversation_list(self, labels: list[str]) -> None:
        """The sidebar lists exactly these conversations (their accessible names), in this order."""
        items = self.page.get_by_role("list", name="Conversation list").locator("button.conv")
        await expect(items).to_have_count(len(labels), timeout=UI_TIMEOUT_MS)
        for item, label in zip(await items.all(), labels, strict=True):
            await expect(item).to_have_accessible_name(label, timeout=UI_TIMEOUT_MS)

    async def open_chat(self, title: str) -> None:
        await self.conversation(title).click()
        await expect(self.page.locator("#chat-title")).to_have_text(title, timeout=UI_TIMEOUT_MS)

    async def say(self, text: str) -> None:
        box = self.page.get_by_label("Message", exact=True)
        await box.fill(text)
        await box.press("Enter")

    def bubbles(self):
        return self.page.locator("#message-list li.msg .text")

    async def expect_messages(self, texts: list[str]) -> None:
        """The open conversation shows exactly these texts, in this order, each once."""
        await expect(self.bubbles()).to_have_text(texts, timeout=UI_TIMEOUT_MS)

    async def unread_badge(self, title: str) -> str:
        return (await self.conversation(title).locator(".badge").inner_text()).strip()

    async def close(self) -> None:
        await self.context.close()


DESKTOP = {"width": 1100, "height": 720}
PHONE = {"width": 390, "height": 780}


async def evaluate_on_client(browser: Any, base_url: str, script: str, arg: Any = None) -> Any:
    """Run ``script`` (a JS function) in a fresh page of the web client and return its result: the
    client's own modules are then tested as the browser loads them."""
    page = await browser.new_page()
    try:
        await page.goto(base_url + "/")
        return await page.evaluate(script, arg)
    finally:
        await page.close()


async def screenshots(page: Page, artifacts_dir: Path, name: str, *,
                      widths: tuple[str, ...] = ("desktop", "phone")) -> list[Path]:
    """The page as it is now, at desktop and phone width, in the light and the dark theme.

    Files are ``<name>-<width>-<theme>.png``; the page is left at its original size in the light theme.
    """
    sizes = {"desktop": DESKTOP, "phone": PHONE}
    original = page.viewport_size or DESKTOP
    paths = []
    for theme in ("light", "dark"):
        await page.emulate_media(color_scheme=theme)
        for width in widths:
            await page.set_viewport_size(sizes[width])
            path = artifacts_dir / f"{name}-{width}-{theme}.png"
            await page.screenshot(path=str(path))
            paths.append(path)
    await page.emulate_media(color_scheme="light")
    await page.set_viewport_size(original)
    return paths


HORIZONTAL_OVERFLOW = """
(selectors) => {
  const width = document.documentElement.clientWidth;
  const outside = [];
  for (const selector of selectors) {
    for (const el of document.querySelectorAll(selector)) {
      const box = el.getBoundingClientRect();
      if (box.width === 0 && box.height === 0) continue;  // not displayed
      if (box.left < -0.5 || box.right > width + 0.5) {
        outside.push(`${selector} [${Math.round(box.left)}, ${Math.round(box.right)}]`);
      }
    }
  }
  return { width, scrollWidth: document.documentElement.scrollWidth, outside };
}
"""


async def horizontal_overflow(page: Page, selectors: list[str]) -> dict[str, Any]:
    """``{width, scrollWidth, outside}``: the viewport width, the document's scroll width and which of
    the displayed elements matching ``selectors`` reach beyond the viewport's left or right edge."""
    return await page.evaluate(HORIZONTAL_OVERFLOW, selectors)


TYPICAL_COLOR = """
async (base64) => {
  const bitmap = await createImageBitmap(await (await fetch(`data:image/png;base64,${base64}`)).blob());
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const { data } = context.getImageData(0, 0, bitmap.width, bitmap.height);
  const channels = [[], [], []];
  for (let i = 0; i < data.length; i += 4) for (let c = 0; c < 3; c += 1) channels[c].push(data[i + c]);
  return channels.map((values) => values.sort((a, b) => a - b)[values.length >> 1]);
}
"""


async def typical_color(locator: Any) -> tuple[float, float, float]:
    """The median colour (0-255 per channel) of the element as it is on screen: its background, for
    anything whose foreground covers less than half of its box."""
    png = await locator.screenshot()
    r, g, b = await locator.page.evaluate(TYPICAL_COLOR, base64.b64encode(png).decode())
    return r, g, b


def parse_css_color(text: str) -> tuple[float, float, float]:
    """``rgb(r, g, b)`` or ``rgba(r, g, b, a)`` as computed by the browser, without the alpha."""
    r, g, b = (float(part) for part in re.findall(r"[\d.]+", text)[:3])
    return r, g, b


def contrast_ratio(one: tuple[float, float, float], other: tuple[float, float, float]) -> float:
    """WCAG 2 contrast ratio of two sRGB colours (0-255 per channel): 1 (same) to 21 (black on white)."""
    def luminance(rgb: tuple[float, float, float]) -> float:
        linear = [(c / 255) / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    lighter, darker = sorted((luminance(one), luminance(other)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)
