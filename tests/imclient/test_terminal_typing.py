"""Typing in the terminal client while messages arrive: the half-typed line stays whole."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Node, drain_inbox
from tests.imclient.pty_terminal import TerminalClient


async def test_a_message_arriving_mid_line_leaves_the_typed_line_intact(node: Node, tmp_path: Path) -> None:
    bob = await node.user("bob")
    await node.register("alice")
    terminal = TerminalClient(node, "alice", tmp_path)
    try:
        await terminal.started()
        terminal.enter(":c bob")
        await terminal.expect("now chatting with bob")
        terminal.type("half typ")
        await terminal.expect("half typ")
        await node.send(bob, "alice", "ping from bob")
        await terminal.expect("bob: ping from bob")
        # The input line is drawn again below the message, holding what was typed.
        await terminal.expect("half typ", timeout=5)
        screen = terminal.screen()
        at = next(i for i, row in enumerate(screen) if "ping from bob" in row)
        assert screen[at].endswith("] bob: ping from bob"), screen  # not printed into the typed text
        assert screen[at + 1:] == ["bob> half typ"], screen  # the input line, below it and whole
        terminal.type("ed line\r")
        await terminal.expect("you -> bob: half typed line")
        assert await terminal.quit() == 0
    finally:
        terminal.close()
    messages, _ = await drain_inbox(node, bob)
    assert [m["body"] for m in messages if m["kind"] == "text" and m["from"] == "alice"] == ["half typed line"]


async def test_typed_lines_are_recalled_and_names_completed(node: Node, tmp_path: Path) -> None:
    bob = await node.user("bob")
    await node.register("alice")
    await node.send(bob, "alice", "hi")
    terminal = TerminalClient(node, "alice", tmp_path)
    try:
        await terminal.started()
        await terminal.printed("bob: hi")
        terminal.type(":c b\t")  # Tab completes a user met in a message
        await terminal.expect(":c bob")
        terminal.type("\r")
        await terminal.expect("now chatting with bob")
        terminal.enter("once more")
        await terminal.expect("you -> bob: once more")
        terminal.type("\x1b[A\r")  # Up recalls the last typed line; Enter sends it again
        await terminal.expect("you -> bob: once more")
        assert terminal.text().count("you -> bob: once more") == 2
        terminal.type(":ol\t")  # commands complete too
        await terminal.expect(":olu")
        terminal.type("\r")
        await terminal.expect(r"online \(\d+\+?\)")
        assert await terminal.quit() == 0
    finally:
        terminal.close()
