"""The SDK keeps its place in the inbox (cursor and epoch) across runs when given a state path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from imclient import Client
from imclient.state import InboxPlace, InboxPlaceFile
from tests.helpers import PASSWORD, Node, eventually
from tests.imclient.support import Inbox


async def floor_of(node: Node, user: str) -> int:
    doc = await node.service.store.trims.find_one({"_id": user})
    return doc["trimmed"] if doc else 0


async def run_until(node: Node, state_path: Path, inbox: Inbox, count: int) -> Client:
    sdk = Client(node.base_url, "bob", PASSWORD, device="laptop", on_message=inbox, on_gap=inbox.on_gap,
                 state_path=state_path)
    await sdk.start(timeout_secs=20)
    await inbox.wait_for(count)
    return sdk


async def test_a_restarted_client_resumes_after_its_last_entry_without_a_gap(
        eager_trim_node: Node, tmp_path: Path) -> None:
    node = eager_trim_node
    alice = await node.user("alice")
    await node.user("bob")
    state_path = tmp_path / "state" / "bob-laptop.json"
    for i in range(3):
        await node.send(alice, "bob", f"m{i}")

    first = Inbox()
    sdk = await run_until(node, state_path, first, 3)
    await sdk.close()  # acknowledges what it got: the server trims it
    await eventually(lambda: floor_of(node, "bob"), until=lambda floor: floor >= 3, what="bob's inbox trimmed")
    saved = json.loads(state_path.read_text())
    assert saved == {"version": 1, "user": "bob", "device": "laptop", "last_seq": 3, "epoch": sdk.epoch}
    assert [p.name for p in state_path.parent.iterdir()] == ["bob-laptop.json"]  # no temporary left

    await node.send(alice, "bob", "while away")
    second = Inbox()
    sdk = await run_until(node, state_path, second, 1)
    try:
        assert second.bodies() == ["while away"]  # nothing again, nothing lost
        assert second.gaps == []
        assert sdk.last_seq == 4
    finally:
        await sdk.close()
    assert json.loads(state_path.read_text())["last_seq"] == 4


async def test_the_saved_place_is_read_when_the_client_is_made(tmp_path: Path) -> None:
    path = tmp_path / "place.json"
    InboxPlaceFile(path, "bob", "laptop").save(InboxPlace(41, "e1"))
    sdk = Client("http://127.0.0.1:9", "bob", PASSWORD, device="laptop", state_path=path, after=7)
    assert (sdk.last_seq, sdk.epoch) == (41, "e1")  # the file wins over `after`
    await sdk.close()


@pytest.mark.parametrize("content", [
    "{not json",
    json.dumps({"version": 1, "user": "carol", "device": "laptop", "last_seq": 5, "epoch": "e"}),
    json.dumps({"version": 1, "user": "bob", "device": "phone", "last_seq": 5, "epoch": "e"}),
    json.dumps({"version": 1, "user": "bob", "device": "laptop", "last_seq": "5", "epoch": "e"}),
    json.dumps({"version": 99, "user": "bob", "device": "laptop", "last_seq": 5, "epoch": "e"}),
])
def test_a_place_that_is_not_this_devices_is_ignored(
        tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "place.json"
    path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="imclient.client"):
        assert InboxPlaceFile(path, "bob", "laptop").load() is None
    assert "ignored" in caplog.text or "unreadable" in caplog.text


def test_no_file_is_a_first_run(tmp_path: Path) -> None:
    assert InboxPlaceFile(tmp_path / "missing.json", "bob", "laptop").load() is None


def test_a_failed_save_is_reported_once_and_leaves_the_old_place(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "place.json"
    places = InboxPlaceFile(path, "bob", "laptop")
    places.save(InboxPlace(3, "e"))

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("imclient.state.os.replace", disk_full)
    with caplog.at_level(logging.WARNING, logger="imclient.client"):
        places.save(InboxPlace(4, "e"))
        places.save(InboxPlace(5, "e"))
    assert caplog.text.count("not saved") == 1
    assert places.load() == InboxPlace(3, "e")
    assert [p.name for p in tmp_path.iterdir()] == ["place.json"]  # the temporary was removed
