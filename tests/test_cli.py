"""The terminal client driven through a real pseudo-terminal (pexpect) against a running node."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect

from tests.helpers import PASSWORD, Node, drain_inbox

REPO = Path(__file__).resolve().parent.parent
EXPECT_TIMEOUT_SECS = 20


def spawn(node: Node, user: str, *extra: str) -> pexpect.spawn:
    env = {**os.environ, "PYTHONPATH": str(REPO), "IM_CLIENT_PASSWORD": PASSWORD, "PYTHONUNBUFFERED": "1"}
    return pexpect.spawn(sys.executable, ["-m", "imclient.cli", "--url", node.base_url, "--user", user, *extra],
                         cwd=str(REPO), env=env, encoding="utf-8", timeout=EXPECT_TIMEOUT_SECS)


async def expect(child: pexpect.spawn, pattern: str) -> None:
    await child.expect(pattern, async_=True)


async def test_chat_through_a_terminal(node: Node) -> None:
    bob = await node.user("bob")
    child = spawn(node, "alice", "--register")
    try:
        await expect(child, r"logged in as alice \((ws|longpoll)\)")
        child.sendline(":h")
        await expect(child, ":olu")
        # Before choosing a conversation, plain text is refused with a hint.
        child.sendline("hello?")
        await expect(child, "no conversation yet")
        # CIM-style private message; the sender's own inbox echoes it once stored.
        child.sendline("bob;;hello bob")
        await expect(child, r"you -> bob: hello bob")
        messages, _ = await drain_inbox(node, bob)
        assert [(m["from"], m["body"]) for m in messages] == [("alice", "hello bob")]
        # An incoming message is printed as it arrives.
        await node.send(bob, "alice", "hi alice")
        await expect(child, r"bob: hi alice")
        # Entering a conversation shows its history; plain lines then go to it.
        child.sendline(":c bob")
        await expect(child, "now chatting with bob")
        await expect(child, "hi alice")
        child.sendline("second line")
        await expect(child, "you -> bob: second line")
        child.sendline(":olu")
        await expect(child, r"online \(\d+\+?\): .*alice")
        child.sendline(":g devs")
        await expect(child, "now chatting with group devs")
        child.sendline("to the group")
        await expect(child, r"(does not support groups|not sent|\[devs\] you: to the group)")
        child.sendline(":nope")
        await expect(child, "unknown command")
        child.sendline(":q")
        await expect(child, "bye")
        await expect(child, pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    messages, _ = await drain_inbox(node, bob)
    texts = [m["body"] for m in messages if m["from"] == "alice" and m["kind"] != "receipt"]
    assert texts == ["hello bob", "second line"]


async def test_wrong_password_exits_with_a_message(node: Node) -> None:
    await node.register("carol")
    child = spawn(node, "carol", "--password", "definitely wrong")
    try:
        await expect(child, "wrong user id or password")
        await expect(child, pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 1
