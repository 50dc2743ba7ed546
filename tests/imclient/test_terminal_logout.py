"""Signing out from the terminal client: ``:logout`` (this device) and ``:logout all``."""

from __future__ import annotations

from pathlib import Path

import pexpect

from tests.helpers import Node
from tests.imclient.pty_terminal import TerminalClient


async def inbox_status(node: Node, token: str) -> int:
    return (await node.request("GET", "/api/v1/inbox", token=token)).status


async def test_logout_signs_out_this_device_only(node: Node, tmp_path: Path) -> None:
    await node.register("bob")
    phone = await node.login("bob", device="phone")
    terminal = TerminalClient(node, "bob", tmp_path)
    try:
        await terminal.started()
        terminal.enter(":logout")
        await terminal.expect(r"signed out of this device \(cli\)")
        await terminal.expect("bye")
        await terminal.expect(pexpect.EOF)
    finally:
        terminal.close()
    assert terminal.child.exitstatus == 0
    assert await inbox_status(node, phone) == 200


async def test_logout_all_signs_out_every_device(node: Node, tmp_path: Path) -> None:
    await node.register("bob")
    phone = await node.login("bob", device="phone")
    terminal = TerminalClient(node, "bob", tmp_path)
    try:
        await terminal.started()
        terminal.enter(":logout all")
        await terminal.expect("signed out on every device")
        await terminal.expect(pexpect.EOF)
    finally:
        terminal.close()
    assert terminal.child.exitstatus == 0
    assert await inbox_status(node, phone) == 401
