"""The terminal client keeps its inbox place between runs: a normal restart is not a gap."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import Node, eventually
from tests.imclient.pty_terminal import TerminalClient


async def floor_of(node: Node, user: str) -> int:
    doc = await node.service.store.trims.find_one({"_id": user})
    return doc["trimmed"] if doc else 0


async def test_a_restart_resumes_where_the_last_run_stopped(eager_trim_node: Node, tmp_path: Path) -> None:
    node = eager_trim_node
    alice = await node.user("alice")
    await node.register("bob")
    first = TerminalClient(node, "bob", tmp_path)
    try:
        await first.started()
        for i in range(3):
            await node.send(alice, "bob", f"first run {i}")
        await first.expect("alice: first run 2")
        assert await first.quit() == 0
    finally:
        first.close()
    # The place is kept per server, user and device under $XDG_STATE_HOME.
    place_file = tmp_path / "im-client" / f"127.0.0.1_{node.port}" / "bob-cli.json"
    assert json.loads(place_file.read_text())["last_seq"] == 3
    # The server trimmed what the first run acknowledged: a client starting from 0 would hear "gap".
    await eventually(lambda: floor_of(node, "bob"), until=lambda floor: floor >= 3, what="bob's inbox trimmed")

    await node.send(alice, "bob", "while away")
    second = TerminalClient(node, "bob", tmp_path)
    try:
        await second.started()
        await second.printed("alice: while away")
        await node.send(alice, "bob", "second run")
        await second.expect("alice: second run")
        assert await second.quit() == 0
    finally:
        second.close()
    text = second.text()
    assert "first run" not in text  # nothing shown twice
    assert "gap" not in text and "trimmed" not in text, text
