"""Inbox store against the real database: seq allocation, idempotency, pull bounds, device trimming."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from im.delivery.acks import CursorState, trim_floor
from im.delivery.inboxes import Inboxes
from im.errors import InvalidInput, Overloaded
from im.storage.store import Store
from tests.helpers import eventually, untrimmed_seqs
from tests.im.conftest import draft, make_inboxes

DAY_SECS = 24 * 3600


@pytest.fixture
def inbox(store: Store) -> Inboxes:
    return make_inboxes(store)


def test_trim_floor_ignores_idle_devices() -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    cursors = [
        CursorState("phone", 40, now - timedelta(hours=1)),
        CursorState("browser", 10, now - timedelta(days=3)),  # idle: does not hold entries back
        CursorState("tablet", 25, now - timedelta(minutes=5)),
    ]
    assert trim_floor(cursors, now=now, idle_secs=DAY_SECS) == 25
    assert trim_floor(cursors, now=now, idle_secs=7 * DAY_SECS) == 10
    assert trim_floor([], now=now, idle_secs=DAY_SECS) is None


async def test_batch_allocates_consecutive_seqs_per_inbox(inbox: Inboxes, store: Store) -> None:
    receipts = await inbox.append([draft("a", "b", "1"), draft("c", "b", "1"), draft("a", "b", "2")])
    assert [r.seqs["b"] for r in receipts] == [1, 2, 3]
    assert [r.seqs["a"] for r in receipts if "a" in r.seqs] == [1, 2]
    assert receipts[1].seqs["c"] == 1
    assert await store.messages.count_documents({}) == 3
    assert await untrimmed_seqs(store, "b") == [1, 2, 3]
    assert await untrimmed_seqs(store, "a") == [1, 2]


async def test_twenty_concurrent_senders_get_gapless_unique_seqs(inbox: Inboxes) -> None:
    """Separate appends (not one batch) racing on one inbox: the node numbers them in turn."""
    per_sender = 5

    async def sender(n: int) -> list[int]:
        seqs = []
        for i in range(per_sender):
            (receipt,) = await inbox.append([draft(f"s{n}", "target", f"m{i}")])
            seqs.append(receipt.seqs["target"])
        return seqs

    results = await asyncio.gather(*(sender(n) for n in range(20)))
    all_seqs = sorted(s for seqs in results for s in seqs)
    assert all_seqs == list(range(1, 20 * per_sender + 1))
    for seqs in results:
        assert seqs == sorted(seqs), "one sender's messages keep their order"
    page = await inbox.pull("target", after=0, limit=500)
    assert [m["seq"] for m in page.messages] == list(range(1, 101))


async def test_duplicate_client_msg_id_returns_original_receipt(inbox: Inboxes, store: Store) -> None:
    (first,) = await inbox.append([draft("a", "b", "same", body="one")])
    again = await inbox.append([draft("a", "b", "same", body="one"), draft("a", "b", "same", body="one")])
    assert all(r.duplicate for r in again)
    assert {r.msg_id for r in again} == {first.msg_id}
    assert again[0].seqs == first.seqs
    assert await store.messages.count_documents({}) == 1
    assert await untrimmed_seqs(store, "b") == [1]
    # The same client_msg_id from another sender is a different message.
    (other,) = await inbox.append([draft("c", "b", "same")])
    assert not other.duplicate and other.seqs["b"] == 2


async def test_duplicates_inside_one_batch_store_once(inbox: Inboxes, store: Store) -> None:
    receipts = await inbox.append([draft("a", "b", "x"), draft("a", "b", "x"), draft("a", "b", "y")])
    assert [r.duplicate for r in receipts] == [False, True, False]
    assert receipts[0].msg_id == receipts[1].msg_id
    assert await untrimmed_seqs(store, "b") == [1, 2]


async def test_pull_pages_and_reports_more(inbox: Inboxes) -> None:
    await inbox.append([draft("a", "b", str(i), body=f"m{i}") for i in range(7)])
    first = await inbox.pull("b", after=0, limit=3)
    assert [m["body"] for m in first.messages] == ["m0", "m1", "m2"]
    assert (first.next, first.head, first.more, first.gap) == (3, 7, True, False)
    second = await inbox.pull("b", after=first.next, limit=10)
    assert [m["seq"] for m in second.messages] == [4, 5, 6, 7]
    assert (second.next, second.more) == (7, False)
    assert first.epoch == second.epoch


async def test_ack_trims_only_below_every_active_device(inbox: Inboxes, store: Store) -> None:
    await inbox.append([draft("a", "b", str(i)) for i in range(6)])
    await inbox.ack("b", "phone", upto=2)
    await inbox.ack("b", "browser", upto=5)
    assert await untrimmed_seqs(store, "b") == [3, 4, 5, 6]  # phone still needs 3..6
    result = await inbox.ack("b", "phone", upto=6)
    assert result.trimmed == 5
    assert await untrimmed_seqs(store, "b") == [6]
    assert await store.messages.count_documents({}) == 6  # the archive keeps everything
    # A pull from behind the floor hears that it was trimmed, and gets what is above it.
    page = await inbox.pull("b", after=2, limit=10)
    assert page.gap is True
    assert [m["seq"] for m in page.messages] == [6]


async def test_idle_device_stops_holding_back_and_then_sees_a_gap(inbox: Inboxes) -> None:
    await inbox.append([draft("a", "b", str(i)) for i in range(4)])
    long_ago = datetime.now(UTC) - timedelta(days=3)
    await inbox.ack("b", "old-tablet", upto=1, now=long_ago)
    await inbox.ack("b", "phone", upto=4)
    page = await inbox.pull("b", after=1, limit=10)  # the tablet comes back
    assert page.gap is True
    assert page.next == 4 and page.messages == []


async def stored_cursor(store: Store, user: str, device: str) -> int | None:
    doc = await store.cursors.find_one({"_id": f"{user}/{device}"})
    return None if doc is None else doc["seq"]


async def test_an_only_devices_cursor_is_written_lazily_and_refreshed(inbox: Inboxes, store: Store) -> None:
    """A user's only device: its first ack writes its cursor; later ones move the floor alone until the
    stored cursor is older than the refresh interval (a minute here: a tenth of a day would be more)."""
    await inbox.append([draft("a", "b", str(i)) for i in range(6)])
    start = datetime.now(UTC)
    assert (await inbox.ack("b", "phone", upto=2, now=start)).trimmed == 2
    assert await stored_cursor(store, "b", "phone") == 2
    result = await inbox.ack("b", "phone", upto=4, now=start + timedelta(seconds=30))
    assert (result.cursor, result.trimmed) == (4, 4)
    assert await untrimmed_seqs(store, "b") == [5, 6]
    assert await stored_cursor(store, "b", "phone") == 2  # behind the floor: never above the device
    await inbox.ack("b", "phone", upto=5, now=start + timedelta(seconds=61))
    assert await stored_cursor(store, "b", "phone") == 5
    assert await untrimmed_seqs(store, "b") == [6]


async def test_a_second_device_is_never_trimmed_past_and_makes_cursors_exact(
        inbox: Inboxes, store: Store) -> None:
    """Once a user has two devices every ack writes its cursor, and the floor waits for the slower
    device, even though the first device's stored cursor was behind when the second appeared."""
    await inbox.append([draft("a", "b", str(i)) for i in range(8)])
    await inbox.ack("b", "phone", upto=1)
    await inbox.ack("b", "phone", upto=4)  # lazily: the floor is 4, the stored cursor 1
    assert await stored_cursor(store, "b", "phone") == 1
    assert (await inbox.ack("b", "tablet", upto=2)).trimmed == 4  # a floor never goes down
    assert await stored_cursor(store, "b", "tablet") == 2
    result = await inbox.ack("b", "phone", upto=8)
    assert (result.cursor, result.trimmed) == (8, 4)  # held back by the tablet at 2
    assert await stored_cursor(store, "b", "phone") == 8
    assert await untrimmed_seqs(store, "b") == [5, 6, 7, 8]
    assert (await inbox.ack("b", "tablet", upto=7)).trimmed == 7
    assert await stored_cursor(store, "b", "tablet") == 7
    assert await untrimmed_seqs(store, "b") == [8]


async def test_ack_beyond_head_is_refused_and_changes_nothing(inbox: Inboxes, store: Store) -> None:
    await inbox.append([draft("a", "b", "1")])
    with pytest.raises(InvalidInput) as err:
        await inbox.ack("b", "phone", upto=2)
    assert err.value.field == "upto"
    assert await store.cursors.count_documents({}) == 0
    assert await untrimmed_seqs(store, "b") == [1]


async def test_device_cursors_are_capped(inbox: Inboxes, store: Store) -> None:
    await inbox.append([draft("a", "b", "1")])
    for device in ("d1", "d2", "d3", "d4", "d5"):
        await inbox.ack("b", device, upto=0)
    assert await store.cursors.count_documents({"user": "b"}) == 3


async def test_same_client_msg_id_racing_from_two_nodes_is_stored_once(store: Store) -> None:
    """Two writers (as on two nodes) both pass the duplicate pre-check; the unique index settles it."""
    node_a = make_inboxes(store)
    node_b = make_inboxes(store)
    for round_ in range(5):
        results = await asyncio.gather(node_a.append([draft("a", "b", f"race{round_}")]),
                                       node_b.append([draft("a", "b", f"race{round_}")]))
        (first,), (second,) = results
        assert first.msg_id == second.msg_id and first.seqs == second.seqs
        assert sorted([first.duplicate, second.duplicate]) == [False, True]
    assert await store.messages.count_documents({}) == 5
    page = await node_a.pull("b", after=0, limit=50)
    assert [m["seq"] for m in page.messages] == [1, 2, 3, 4, 5]


async def test_a_batch_stopped_half_way_keeps_its_prefix_and_leaves_no_hole(
        inbox: Inboxes, store: Store) -> None:
    """The batch's ordered insert stops at its second draft (that client_msg_id is stored already):
    the new message before it stays, the duplicate gets the original receipt, nothing else is
    written, and the counters reach the heads once the node saves them."""
    await inbox.append([draft("a", "b", "1")])
    fresh, again = await inbox.append([draft("a", "b", "2"), draft("a", "b", "1")])
    assert again.duplicate and not fresh.duplicate
    assert fresh.seqs == {"b": 2, "a": 2}
    await inbox.stop()
    assert {d["_id"]: d["seq"] async for d in store.counters.find({})} == {"a": 2, "b": 2}
    assert await store.messages.count_documents({}) == 2
    assert await untrimmed_seqs(store, "b") == [1, 2]


async def test_counters_behind_the_archive_are_read_past_and_raised_by_the_next_write(store: Store) -> None:
    """Counters behind the archive's keys (a node that stopped before saving its heads): the next
    writer finds the keys above them, goes on after them, and raises the counters when it saves."""
    first = make_inboxes(store)
    await first.append([draft("a", "b", str(i)) for i in range(3)])
    await store.counters.update_many({}, {"$set": {"seq": 0}})  # as if never saved
    shared = make_inboxes(store)
    (receipt,) = await shared.append([draft("c", "b", "next")])
    assert receipt.seqs["b"] == 4
    assert await untrimmed_seqs(store, "b") == [1, 2, 3, 4]
    await shared.stop()
    assert (await store.counters.find_one({"_id": "b"}) or {})["seq"] == 4


async def test_acks_inside_the_trim_interval_are_written_with_the_next_trim(store: Store) -> None:
    """An inbox trimmed less than the trim interval ago holds its next acks in memory: answered at once,
    written (cursor and trim) when the interval ends, or at shutdown."""
    inbox = make_inboxes(store, trim_interval_secs=0.5)
    await inbox.append([draft("a", "b", str(i)) for i in range(8)])
    first = await inbox.ack("b", "phone", upto=2)
    assert (first.cursor, first.trimmed) == (2, 2)
    held = await inbox.ack("b", "phone", upto=5)
    assert (held.cursor, held.trimmed) == (5, 2)
    assert await stored_cursor(store, "b", "phone") == 2  # not written yet
    await eventually(lambda: untrimmed_seqs(store, "b"), until=lambda seqs: seqs == [6, 7, 8], timeout_secs=3,
                     what="the held ack's trim")
    assert await untrimmed_seqs(store, "b") == [6, 7, 8]  # the held ack, written as the floor
    # The phone is b's only device and its cursor is recent: the floor holds its progress.
    assert await stored_cursor(store, "b", "phone") == 2

    assert (await inbox.ack("b", "phone", upto=6)).trimmed == 6  # the interval is over: written now
    assert (await inbox.ack("b", "phone", upto=8)).cursor == 8  # held again
    await inbox.close_acks()
    assert await untrimmed_seqs(store, "b") == []


async def test_acks_beyond_the_queue_bound_are_refused_and_nothing_is_written(
        inbox: Inboxes, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    (receipt,) = await inbox.append([draft("a", "b", "m1")])
    monkeypatch.setattr("im.delivery.acks.ACK_QUEUE_MAX", 0)  # the queue counts as full
    with pytest.raises(Overloaded):
        await inbox.ack("b", "phone", upto=receipt.seqs["b"])
    with pytest.raises(Overloaded):
        await inbox.ack_nowait("b", "phone", upto=receipt.seqs["b"])
    assert await store.cursors.count_documents({"user": "b"}) == 0
    monkeypatch.setattr("im.delivery.acks.ACK_QUEUE_MAX", 50_000)
    assert (await inbox.ack("b", "phone", upto=receipt.seqs["b"])).cursor == receipt.seqs["b"]
