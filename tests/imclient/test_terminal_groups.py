"""The terminal client's groups: found by name (or id), sent to, and named in incoming lines."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Node, drain_inbox
from tests.imclient.pty_terminal import TerminalClient


async def create_group(node: Node, token: str, name: str, members: list[str]) -> str:
    reply = await node.request("POST", "/api/v1/groups", token=token, json_body={"name": name, "members": members})
    assert reply.status == 201, reply.body
    return reply.body["group"]


async def send_to_group(node: Node, token: str, group: str, body: str) -> None:
    reply = await node.request("POST", "/api/v1/messages", token=token,
                               json_body={"group": group, "body": body, "client_msg_id": body})
    assert reply.status == 201, reply.body


async def test_a_group_is_chosen_by_name_and_its_lines_carry_the_name(node: Node, tmp_path: Path) -> None:
    alice = await node.user("alice")
    await node.register("bob")
    devs = await create_group(node, alice, "devs", ["bob"])
    terminal = TerminalClient(node, "bob", tmp_path)
    try:
        await terminal.started()
        terminal.enter(":g devs")
        await terminal.expect("now chatting with group devs")
        terminal.enter("hello devs")
        await terminal.expect(r"\[devs\] you: hello devs")
        messages, _ = await drain_inbox(node, alice)
        assert [(m["conv"], m["from"], m["body"]) for m in messages] == [(f"g:{devs}", "bob", "hello devs")]
        # An incoming group line names the group, not its id.
        await send_to_group(node, alice, devs, "welcome")
        await terminal.expect(r"\[devs\] alice: welcome")
        assert devs not in terminal.text().split("welcome")[0].split("hello devs")[-1]
        # A group made while the client runs is named too.
        ops = await create_group(node, alice, "ops", ["bob"])
        await send_to_group(node, alice, ops, "ops here")
        await terminal.expect(r"\[ops\] alice: ops here")
        assert await terminal.quit() == 0
    finally:
        terminal.close()


async def test_an_ambiguous_or_unknown_group_is_said_so_and_an_id_chooses(node: Node, tmp_path: Path) -> None:
    alice = await node.user("alice")
    await node.register("bob")
    first = await create_group(node, alice, "team", ["bob"])
    second = await create_group(node, alice, "team", ["bob"])
    await create_group(node, alice, "secret", [])  # bob is not in it
    terminal = TerminalClient(node, "bob", tmp_path)
    try:
        await terminal.started()
        terminal.enter(":g team")
        await terminal.expect(r"2 of your groups are named 'team'")
        assert first in terminal.text() and second in terminal.text()
        # No conversation was chosen: a line now is not sent anywhere.
        terminal.enter("for the team")
        await terminal.expect("not sent: no conversation yet")
        terminal.enter(":g secret")
        await terminal.expect("you are in no group named 'secret'")
        terminal.enter(":groups")
        await terminal.expect(f"team  \\(id {second}\\)" if first < second else f"team  \\(id {first}\\)")
        terminal.enter(f":g {second}")
        await terminal.expect("now chatting with group team")
        terminal.enter("to the second")
        await terminal.expect(r"\[team\] you: to the second")
        assert await terminal.quit() == 0
    finally:
        terminal.close()
    messages, _ = await drain_inbox(node, alice)
    assert [(m["conv"], m["body"]) for m in messages] == [(f"g:{second}", "to the second")]
