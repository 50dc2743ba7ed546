"""Signing out through the SDK: this device only, or every device of the user."""

from __future__ import annotations

import asyncio

import pytest

from imclient import Client
from tests.helpers import PASSWORD, Node
from tests.imclient.support import Inbox


async def started(node: Node, device: str, inbox: Inbox | None = None, transport: str = "ws") -> Client:
    sdk = Client(node.base_url, "bob", PASSWORD, device=device, on_message=inbox, transport=transport)
    await sdk.start(timeout_secs=20)
    return sdk


async def status_of(node: Node, token: str) -> int:
    return (await node.request("GET", "/api/v1/inbox", token=token)).status


@pytest.mark.parametrize("transport", ["ws", "longpoll"])
async def test_logout_signs_out_this_device_and_stops_without_logging_in_again(
        node: Node, transport: str) -> None:
    alice = await node.user("alice")
    await node.register("bob")
    phone_inbox = Inbox()
    laptop = await started(node, "laptop", transport=transport)
    phone = await started(node, "phone", phone_inbox, transport=transport)
    try:
        laptop_token = laptop.token
        assert laptop_token is not None
        reply = await laptop.logout()
        assert reply == {"signed_out": "device", "device": "laptop", "user": "bob"}
        assert laptop.stopped_reason == "signed_out" and laptop.token is None
        assert await status_of(node, laptop_token) == 401
        await asyncio.sleep(0.5)  # a client that logged in again would hold a token now
        assert laptop.token is None and laptop.connected_via is None
        # The other device goes on.
        await node.send(alice, "bob", "still here")
        assert await phone_inbox.wait_for(1) == ["still here"]
    finally:
        await laptop.close()
        await phone.close()


async def test_logout_of_all_devices_refuses_every_token_of_the_user(node: Node) -> None:
    await node.register("bob")
    tablet_token = await node.login("bob", device="tablet")
    laptop = await started(node, "laptop")
    reply = await laptop.logout(all_devices=True)
    assert reply == {"signed_out": "all", "user": "bob"}
    assert await status_of(node, tablet_token) == 401
    # Signing in again works.
    again = await started(node, "laptop")
    await again.close()
