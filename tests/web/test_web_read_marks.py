"""A read message's ticks are told apart from delivered ones at a glance, in the light and the dark theme.

The check is made on what is on screen: the typical (median) colour of the read mark's box and of the
delivered mark's box differ by at least WCAG's 3:1 for non-text marks, and the read ticks stand out
from what is behind them by at least 3:1 as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import expect

from tests.helpers import PASSWORD, Node
from tests.web.support import (
    UI_TIMEOUT_MS,
    WebUser,
    contrast_ratio,
    parse_css_color,
    screenshots,
    typical_color,
)

NON_TEXT_CONTRAST = 3.0


async def ink_contrast(mark: Any) -> float:
    """The contrast of the mark's ticks against what is behind them (its own opaque background, else
    the bubble's typical colour)."""
    style = await mark.evaluate("el => { const s = getComputedStyle(el); "
                                "return { color: s.color, background: s.backgroundColor }; }")
    background_opaque = style["background"].startswith("rgb(")
    behind = (parse_css_color(style["background"]) if background_opaque
              else await typical_color(mark.locator("xpath=ancestor::div[contains(@class, 'bubble')]")))
    return contrast_ratio(parse_css_color(style["color"]), behind)


async def test_read_ticks_stand_out_from_delivered_ones(node: Node, browser: Any, artifacts_dir: Path) -> None:
    tom = await node.user("tom")
    await node.register("rita")
    await node.register("sam")
    assert (await node.send(tom, "sam", "hi sam")).status == 201  # somewhere else for sam to look
    rita = await WebUser.open(browser, node.base_url, "rita", transport="ws")
    sam = await WebUser.open(browser, node.base_url, "sam", transport="ws")
    try:
        await rita.sign_in(PASSWORD)
        await sam.sign_in(PASSWORD)
        await rita.start_chat("sam")
        await rita.say("this one you read")
        read = rita.page.locator("#message-list li.msg.mine").nth(0)
        await sam.open_chat("rita")
        await expect(read).to_have_attribute("data-state", "read", timeout=UI_TIMEOUT_MS)
        await sam.open_chat("tom")
        await rita.say("this one only arrived")
        delivered = rita.page.locator("#message-list li.msg.mine").nth(1)
        await expect(delivered).to_have_attribute("data-state", "delivered", timeout=UI_TIMEOUT_MS)

        for theme in ("light", "dark"):
            await rita.page.emulate_media(color_scheme=theme)
            read_mark, delivered_mark = read.locator(".mark"), delivered.locator(".mark")
            apart = contrast_ratio(await typical_color(read_mark), await typical_color(delivered_mark))
            assert apart >= NON_TEXT_CONTRAST, f"{theme}: read and delivered marks differ only {apart:.2f}:1"
            ink = await ink_contrast(read_mark)
            assert ink >= NON_TEXT_CONTRAST, f"{theme}: the read ticks stand out only {ink:.2f}:1"
        await screenshots(rita.page, artifacts_dir, "read-marks")
        assert rita.console_errors == [] and sam.console_errors == []
    finally:
        await rita.close()
        await sam.close()
