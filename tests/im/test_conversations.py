"""Domain pieces of conversations: receipt drafts, history windows, group updates under concurrency."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from im.conversations.groups import GroupStore
from im.conversations.history import history_windows
from im.conversations.receipts import MAX_IDS_PER_RECEIPT, Touched, receipt_drafts, wants_receipt
from im.errors import ConflictError
from im.protocol import parse_read, parse_send
from im.storage.store import Store


def test_receipt_drafts_group_by_sender_and_are_deterministic() -> None:
    touched = [Touched("b" * 24, "d:a:r", "a"), Touched("a" * 24, "d:a:r", "a"), Touched("c" * 24, "g:1", "z")]
    drafts = receipt_drafts("r", "delivered", touched)
    assert [(d.sender, d.to, d.conv, d.recipients, d.kind) for d in drafts] == [
        ("r", "a", "d:a:r", ("a",), "receipt"), ("r", "z", "g:1", ("z",), "receipt")]
    assert drafts[0].body == {"status": "delivered", "by": "r", "msg_ids": ["a" * 24, "b" * 24]}
    # The same messages give the same client_msg_id (a repeated ack or read dedups); read differs.
    again = receipt_drafts("r", "delivered", list(reversed(touched)))
    assert {d.client_msg_id for d in again} == {d.client_msg_id for d in drafts}
    assert not {d.client_msg_id for d in receipt_drafts("r", "read", touched)} & {d.client_msg_id for d in drafts}
    many = [Touched(f"{i:024x}", "d:a:r", "a") for i in range(MAX_IDS_PER_RECEIPT + 1)]
    assert [len(d.body["msg_ids"]) for d in receipt_drafts("r", "read", many)] == [MAX_IDS_PER_RECEIPT, 1]


def test_no_receipts_for_receipts_or_own_messages() -> None:
    assert wants_receipt("bob", sender="alice", kind="text")
    assert wants_receipt("bob", sender="alice", kind="file")
    assert not wants_receipt("bob", sender="bob", kind="text")
    assert not wants_receipt("bob", sender="alice", kind="receipt")


def test_history_windows_double_back_to_the_floor() -> None:
    upper = datetime(2026, 1, 1, 12, tzinfo=UTC)
    floor = upper - timedelta(seconds=600 * 7 + 100)
    windows = history_windows(upper=upper, floor=floor, first_secs=600)
    widths = [(hi - lo).total_seconds() for lo, hi in windows]
    assert widths == [600, 1200, 2400, 100]
    assert windows[0][1] == upper and windows[-1][0] == floor
    assert all(a[0] == b[1] for a, b in itertools.pairwise(windows))  # adjacent, no overlap
    assert history_windows(upper=floor, floor=floor) == []


def test_send_and_read_parsing() -> None:
    group = parse_send({"group": "abc123", "body": "hi", "client_msg_id": "1"}, max_text_chars=10)
    assert (group.group, group.to) == ("abc123", "")
    direct = parse_send({"to": "bob", "body": "hi", "client_msg_id": "1"}, max_text_chars=10)
    assert (direct.group, direct.to) == ("", "bob")
    assert parse_read({"msg_ids": ["a" * 24, "a" * 24, "b" * 24]}) == ["a" * 24, "b" * 24]


@pytest.fixture
async def store(mongo, db_name: str) -> AsyncIterator[Store]:
    s = Store(mongo.url, db_name, write_concern="1")
    try:
        yield s
    finally:
        await s.close()


async def test_concurrent_adds_never_pass_the_cap_nor_lose_a_change(store: Store) -> None:
    groups = GroupStore(store.db["groups"], max_members=6)
    await groups.ensure_indexes()
    group = await groups.create("owner", "g", [])
    results = await asyncio.gather(
        *(groups.add_members("owner", group.id, [f"u{i}"]) for i in range(8)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, ConflictError) for r in refused) and len(refused) == 3
    stored = await groups.get(group.id)
    assert stored is not None and len(stored.members) == 6 and stored.members[0] == "owner"
    assert [g.id for g in await groups.of_user("u0" if "u0" in stored.members else stored.members[1])] == [group.id]
