"""Signing out: "Sign out" ends this browser's session only; "Sign out everywhere" (after a confirmation)
ends every device's. Each browser context is one device (its own localStorage, so its own device id)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import expect

from tests.helpers import PASSWORD, Node
from tests.web.support import UI_TIMEOUT_MS, WebUser, screenshots

SESSION_TOKEN = "() => JSON.parse(localStorage.getItem('im.session')).token"


async def signed_in_after_reload(person: WebUser) -> bool:
    """Reload the page: does it come back signed in (chat view) or ask to sign in (auth view)?"""
    await person.page.reload()
    live = '#connection-status[data-state="live"]:visible'
    await expect(person.page.locator(f"{live}, #auth-view:visible").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    return await person.page.locator(live).is_visible()


async def test_sign_out_this_device_then_everywhere(node: Node, browser: Any, artifacts_dir: Path) -> None:
    await node.register("quinn")
    sender = await node.user("rosa")
    laptop = await WebUser.open(browser, node.base_url, "quinn", transport="longpoll")
    phone = await WebUser.open(browser, node.base_url, "quinn", transport="ws")
    try:
        await laptop.sign_in(PASSWORD)
        await phone.sign_in(PASSWORD)
        laptop_token = await laptop.page.evaluate(SESSION_TOKEN)

        await laptop.page.get_by_role("button", name="Sign out").click()
        menu = laptop.page.get_by_role("menu", name="Sign out")
        await expect(menu).to_be_visible()
        await screenshots(laptop.page, artifacts_dir, "sign-out-menu", widths=("desktop",))
        await menu.get_by_role("menuitem", name="Sign out", exact=True).click()
        await expect(laptop.page.locator("#auth-view")).to_be_visible(timeout=UI_TIMEOUT_MS)
        refused = await node.request("GET", "/api/v1/inbox", token=laptop_token)
        assert refused.status == 401 and refused.error_code == "token_revoked"

        assert await signed_in_after_reload(phone), "signing out the laptop signed out the phone too"
        assert (await node.send(sender, "quinn", "still here on the phone")).status == 201
        await phone.open_chat("rosa")
        await phone.expect_messages(["still here on the phone"])

        await laptop.sign_in(PASSWORD)
        await laptop.page.get_by_role("button", name="Sign out").click()
        await laptop.page.get_by_role("menuitem", name="Sign out everywhere").click()
        dialog = laptop.page.get_by_role("dialog", name="Sign out everywhere?")
        await expect(dialog).to_be_visible()
        await expect(dialog).to_contain_text("quinn")
        await screenshots(laptop.page, artifacts_dir, "sign-out-everywhere-confirm")
        await dialog.get_by_role("button", name="Cancel").click()
        await expect(dialog).to_be_hidden()
        assert await signed_in_after_reload(laptop), "cancelling the confirmation still signed out"

        await laptop.page.get_by_role("button", name="Sign out").click()
        await laptop.page.get_by_role("menuitem", name="Sign out everywhere").click()
        await dialog.get_by_role("button", name="Sign out everywhere").click()
        await expect(laptop.page.locator("#auth-view")).to_be_visible(timeout=UI_TIMEOUT_MS)
        assert not await signed_in_after_reload(phone), "the phone is still signed in"
        await expect(phone.page.get_by_role("alert").first).to_contain_text("session has ended")
        assert laptop.console_errors == []
        assert [e for e in phone.console_errors if "401" not in e] == []
    finally:
        await laptop.close()
        await phone.close()
