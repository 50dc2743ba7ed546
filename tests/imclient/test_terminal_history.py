"""Entering a conversation in the terminal client shows its history from the server's archive."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Node, drain_inbox, eventually
from tests.imclient.pty_terminal import TerminalClient


async def test_history_comes_from_the_archive_when_the_inbox_was_trimmed(
        eager_trim_node: Node, tmp_path: Path) -> None:
    """What alice's other device already took (and the server trimmed) is not in her inbox any more;
    the terminal shows it from the conversation's archive."""
    node = eager_trim_node
    alice = await node.user("alice")
    bob = await node.user("bob")
    await node.send(bob, "alice", "earlier from bob")
    await node.send(alice, "bob", "earlier from alice")
    group = (await node.request("POST", "/api/v1/groups", token=bob,
                                json_body={"name": "devs", "members": ["alice"]})).body["group"]
    await node.request("POST", "/api/v1/messages", token=bob,
                       json_body={"group": group, "body": "earlier in devs", "client_msg_id": "g1"})
    _, head = await drain_inbox(node, alice)
    await node.ack(alice, head)
    await eventually(lambda: node.pull(alice), until=lambda r: r.body["next"] == head and not r.body["messages"],
                     what="alice's inbox trimmed")

    terminal = TerminalClient(node, "alice", tmp_path)
    try:
        await terminal.started()
        terminal.enter(":c bob")
        await terminal.expect("now chatting with bob")
        await terminal.expect(r"bob: earlier from bob")
        await terminal.expect(r"you -> bob: earlier from alice")
        terminal.enter(":g devs")
        await terminal.expect("now chatting with group devs")
        await terminal.expect(r"\[devs\] bob: earlier in devs")
        # A conversation with no messages yet shows none, and no error.
        await node.user("carol")
        terminal.enter(":c carol")
        await terminal.expect("now chatting with carol")
        terminal.enter(":c nobody")
        await terminal.expect("no user 'nobody'")
        assert await terminal.quit() == 0
    finally:
        terminal.close()
    assert "history unavailable" not in terminal.text()
