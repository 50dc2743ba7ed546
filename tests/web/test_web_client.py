"""The web client end to end: a real server and SecantusDB, Debian's headless Chromium, two people.

Each person is a separate browser context (own localStorage, so own device and cursor), driven
through the page's labels as a user would. One uses long-poll (``?transport=longpoll``), the other
WebSocket (``?transport=ws``); the tests check the transport each page really used on the wire.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import expect

from tests.helpers import PASSWORD, Node, eventually
from tests.web.support import UI_TIMEOUT_MS, WebUser


async def test_two_people_chat_both_ways_over_longpoll_and_websocket(
    node: Node, browser: Any, artifacts_dir: Path
) -> None:
    assert (await node.register("bob")).status == 201  # bob has an account; alice signs up in the page
    alice = await WebUser.open(browser, node.base_url, "alice", transport="longpoll")
    bob = await WebUser.open(browser, node.base_url, "bob", transport="ws")
    try:
        await alice.sign_in(PASSWORD, register=True)
        await bob.sign_in(PASSWORD)

        await alice.start_chat("bob")
        to_bob = ["hi bob!", "are you there?", "third message, with <b>markup</b> & emoji 🎉"]
        for text in to_bob:
            await alice.say(text)
        await alice.expect_messages(to_bob)

        # bob sees the conversation appear with its unread count, then the messages in order, once.
        await expect(bob.conversation("alice")).to_have_accessible_name("Chat with alice, 3 unread",
                                                                        timeout=UI_TIMEOUT_MS)
        await bob.open_chat("alice")
        await bob.expect_messages(to_bob)
        await expect(bob.conversation("alice")).to_have_accessible_name("Chat with alice")  # read now

        to_alice = ["hey alice", "yes, here", "long-poll and WebSocket, same conversation"]
        for text in to_alice:
            await bob.say(text)
        await bob.expect_messages(to_bob + to_alice)
        await alice.expect_messages(to_bob + to_alice)

        # Own messages end up confirmed by the server (no clock left), on both sides.
        for person in (alice, bob):
            mine = person.page.locator("#message-list li.msg.mine")
            await expect(mine).to_have_count(3)
            await expect(person.page.locator('#message-list li.msg.mine[data-state="pending"]')).to_have_count(
                0, timeout=UI_TIMEOUT_MS)

        # Each page used the transport it asked for, on the wire.
        assert await alice.transport() == "longpoll"
        assert alice.websockets == [] and alice.polls > 0
        assert await bob.transport() == "ws"
        assert bob.websockets and bob.polls == 0 and bob.sends == 0  # bob sent over the socket, not REST

        await alice.page.screenshot(path=str(artifacts_dir / "chat-alice-longpoll.png"))
        await bob.page.screenshot(path=str(artifacts_dir / "chat-bob-websocket.png"))
        assert alice.console_errors == [] and bob.console_errors == []
    finally:
        await alice.close()
        await bob.close()


async def test_reload_keeps_conversation_without_duplicates(node: Node, browser: Any) -> None:
    """The cursor and the conversation survive a reload: nothing is shown twice, nothing is lost."""
    sender = await node.user("carol")
    await node.register("dave")
    dave = await WebUser.open(browser, node.base_url, "dave")
    try:
        await dave.sign_in(PASSWORD)
        for i in range(3):
            assert (await node.send(sender, "dave", f"before reload {i}")).status == 201
        await dave.open_chat("carol")
        await dave.expect_messages([f"before reload {i}" for i in range(3)])

        await dave.page.reload()
        await expect(dave.page.locator("#me-name")).to_have_text("dave", timeout=UI_TIMEOUT_MS)
        assert (await node.send(sender, "dave", "after reload")).status == 201
        await dave.open_chat("carol")
        await dave.expect_messages([f"before reload {i}" for i in range(3)] + ["after reload"])
        assert dave.console_errors == []
    finally:
        await dave.close()


async def test_send_retried_with_same_id_is_shown_once(node: Node, browser: Any) -> None:
    """The server stores a send but the reply is lost: the retry carries the same client_msg_id, the
    server answers with the original receipt (``duplicate``), and both people see the message once."""
    await node.register("erin")
    frank_token = await node.user("frank")
    erin = await WebUser.open(browser, node.base_url, "erin", transport="longpoll")
    attempts: list[tuple[dict[str, Any], int]] = []

    async def lose_first_reply(route: Any) -> None:
        response = await route.fetch()  # the server stores the message...
        attempts.append((route.request.post_data_json, response.status))
        if len(attempts) == 1:
            await route.abort("connectionreset")  # ...but the client never hears the receipt
        else:
            await route.fulfill(response=response)

    async def no_polls(route: Any) -> None:
        await route.abort("connectionrefused")  # no echo through the inbox: only a retry can confirm

    try:
        await erin.sign_in(PASSWORD)
        await erin.page.route("**/api/v1/poll*", no_polls)
        # Wake the long-poll in flight with a message; the polls after it fail.
        assert (await node.send(frank_token, "erin", "hi erin")).status == 201
        await expect(erin.page.locator("#connection-status")).to_have_attribute("data-state", "offline",
                                                                                timeout=UI_TIMEOUT_MS)
        await erin.open_chat("frank")
        await erin.page.route("**/api/v1/messages", lose_first_reply)
        await erin.say("exactly once, please")
        await expect(erin.page.locator('#message-list li.msg.mine[data-state="sent"]')).to_have_count(
            1, timeout=UI_TIMEOUT_MS)
        assert [status for _, status in attempts] == [201, 200]  # stored, then recognised as a retry
        assert len({body["client_msg_id"] for body, _ in attempts}) == 1

        await erin.page.unroute("**/api/v1/poll*")
        await expect(erin.page.locator("#connection-status")).to_have_attribute("data-state", "live",
                                                                                timeout=UI_TIMEOUT_MS)
        await erin.expect_messages(["hi erin", "exactly once, please"])
        pulled = await node.pull(frank_token)
        texts = [m["body"] for m in pulled.body["messages"] if m["kind"] == "text"]
        assert texts == ["hi erin", "exactly once, please"]
        assert [e for e in erin.console_errors if "ERR_CONNECTION" not in e] == []
    finally:
        await erin.close()


async def test_auto_mode_starts_on_longpoll_and_upgrades_to_websocket(node: Node, browser: Any) -> None:
    await node.register("gina")
    sender = await node.user("hank")
    gina = await WebUser.open(browser, node.base_url, "gina")
    try:
        await gina.sign_in(PASSWORD)
        await expect(gina.page.locator("#connection-status")).to_have_attribute("data-transport", "ws",
                                                                                timeout=UI_TIMEOUT_MS)
        assert gina.polls >= 1 and gina.websockets  # started on long-poll, then the probe succeeded
        assert (await node.send(sender, "gina", "arrives over the socket")).status == 201
        await gina.open_chat("hank")
        await gina.expect_messages(["arrives over the socket"])
        assert gina.console_errors == []
    finally:
        await gina.close()


async def test_presence_lists_the_other_person(node: Node, browser: Any) -> None:
    await node.register("ivan")
    await node.register("judy")
    ivan = await WebUser.open(browser, node.base_url, "ivan", transport="ws")
    judy = await WebUser.open(browser, node.base_url, "judy", transport="longpoll")
    try:
        await ivan.sign_in(PASSWORD)
        await judy.sign_in(PASSWORD)
        online = judy.page.get_by_role("list", name="Online users")
        await expect(online.get_by_role("button", name="Chat with ivan (online)")).to_be_visible(timeout=30_000)
        await online.get_by_role("button", name="Chat with ivan (online)").click()
        await expect(judy.page.locator("#chat-subtitle")).to_have_text("online")
    finally:
        await ivan.close()
        await judy.close()


async def test_bad_password_shows_an_error(node: Node, browser: Any) -> None:
    await node.register("kate")
    kate = await WebUser.open(browser, node.base_url, "kate")
    try:
        await kate.page.get_by_label("Username", exact=True).fill("kate")
        await kate.page.get_by_label("Password", exact=True).fill("not the password")
        await kate.page.locator("#auth-submit").click()
        await expect(kate.page.get_by_role("alert").first).to_have_text("Wrong username or password.",
                                                                         timeout=UI_TIMEOUT_MS)
    finally:
        await kate.close()


async def test_phone_layout_shows_one_pane(node: Node, browser: Any, artifacts_dir: Path) -> None:
    sender = await node.user("liam")
    await node.register("mona")
    mona = await WebUser.open(browser, node.base_url, "mona", viewport={"width": 390, "height": 780})
    try:
        await mona.sign_in(PASSWORD)
        assert (await node.send(sender, "mona", "on the phone")).status == 201
        await mona.open_chat("liam")
        await mona.expect_messages(["on the phone"])
        await expect(mona.page.locator(".sidebar")).to_be_hidden()
        await mona.page.screenshot(path=str(artifacts_dir / "phone-chat.png"))
        await mona.page.get_by_role("button", name="Back to conversations").click()
        await expect(mona.page.get_by_role("list", name="Conversation list")).to_be_visible()
    finally:
        await mona.close()


async def test_auto_mode_stays_on_longpoll_when_websocket_is_refused(node: Node, browser: Any) -> None:
    """A proxy that accepts the upgrade and then drops the socket: the probe fails, long-poll carries on."""
    await node.register("owen")
    sender = await node.user("paula")
    owen = await WebUser.open(browser, node.base_url, "owen")
    dropped: list[str] = []

    async def drop(ws: Any) -> None:
        dropped.append(ws.url)
        await ws.close(code=1011, reason="proxy says no")

    try:
        await owen.page.route_web_socket("**/ws", drop)
        await owen.sign_in(PASSWORD)
        await expect(owen.page.locator("#connection-status")).to_have_attribute("data-transport", "longpoll")
        # The probe runs shortly after the start.
        await eventually(lambda: dropped, timeout_secs=10, interval_secs=0.1, what="the WebSocket probe")
        assert dropped, "the client never probed the WebSocket"
        assert (await node.send(sender, "owen", "still arrives")).status == 201
        await owen.open_chat("paula")
        await owen.expect_messages(["still arrives"])
        assert await owen.transport() == "longpoll"
        assert [e for e in owen.console_errors if "WebSocket" not in e] == []
    finally:
        await owen.close()
