"""A chat through the terminal client, commands included, in a real pty against a running node."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pexpect

from tests.helpers import PASSWORD, Node, drain_inbox
from tests.imclient.pty_terminal import REPO, TerminalClient


async def test_chat_through_a_terminal(node: Node, tmp_path: Path) -> None:
    bob = await node.user("bob")
    terminal = TerminalClient(node, "alice", tmp_path, "--register")
    try:
        await terminal.started()
        terminal.enter(":h")
        await terminal.expect(":logout all")
        # Before choosing a conversation, plain text is refused with a hint.
        terminal.enter("hello?")
        await terminal.expect("not sent: no conversation yet")
        # CIM-style private message; the sender's own inbox echoes it once stored.
        terminal.enter("bob;;hello bob")
        await terminal.expect("you -> bob: hello bob")
        # An incoming message is printed as it arrives.
        await node.send(bob, "alice", "hi alice")
        await terminal.expect("bob: hi alice")
        # Entering a conversation shows its history; plain lines then go to it.
        terminal.enter(":c bob")
        await terminal.expect("now chatting with bob")
        await terminal.expect("you -> bob: hello bob")
        await terminal.expect("bob: hi alice")
        terminal.enter("second line")
        await terminal.expect("you -> bob: second line")
        terminal.enter(":olu")
        await terminal.expect(r"online \(\d+\+?\): .*alice")
        terminal.enter(":groups")
        await terminal.expect("you are in no group")
        terminal.enter(":nope")
        await terminal.expect("unknown command ':nope'")
        assert await terminal.quit() == 0
    finally:
        terminal.close()
    messages, _ = await drain_inbox(node, bob)
    texts = [m["body"] for m in messages if m["from"] == "alice" and m["kind"] != "receipt"]
    assert texts == ["hello bob", "second line"]


async def test_control_characters_from_others_are_shown_escaped(node: Node, tmp_path: Path) -> None:
    bob = await node.user("bob")
    await node.register("alice")
    terminal = TerminalClient(node, "alice", tmp_path)
    try:
        await terminal.started()
        await node.send(bob, "alice", "clear\x1b[2Jscreen")
        await terminal.expect(r"bob: clear\\x1b\[2Jscreen")
        assert await terminal.quit() == 0
    finally:
        terminal.close()


async def test_wrong_password_exits_with_a_message(node: Node, tmp_path: Path) -> None:
    await node.register("carol")
    terminal = TerminalClient(node, "carol", tmp_path, "--password", "definitely wrong")
    try:
        await terminal.expect("wrong user id or password")
        await terminal.expect(pexpect.EOF)
    finally:
        terminal.close()
    assert terminal.child.exitstatus == 1


async def test_lines_from_a_pipe_are_read_plainly(node: Node, tmp_path: Path) -> None:
    """Scripts feed the client through a pipe: no line editor, every line still runs."""
    bob = await node.user("bob")
    env = {**os.environ, "PYTHONPATH": str(REPO), "IM_CLIENT_PASSWORD": PASSWORD, "XDG_STATE_HOME": str(tmp_path)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imclient.cli", "--url", node.base_url, "--user", "alice", "--register",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=str(REPO), env=env)
    out, err = await asyncio.wait_for(process.communicate(b"bob;;from a script\n:q\n"), 60)
    assert process.returncode == 0, err.decode()
    assert "you -> bob: from a script" in out.decode()
    messages, _ = await drain_inbox(node, bob)
    assert [m["body"] for m in messages if m["from"] == "alice"] == ["from a script"]
