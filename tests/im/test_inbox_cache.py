"""The in-memory tail of each inbox: pulls served from it are exactly what the store would return, cost
no store read on a single node, and stay correct when another writer (a cluster node) interleaves."""

from __future__ import annotations

import asyncio

import pytest

from im.cluster.news import InboxNews
from im.delivery.cache import InboxCache
from im.delivery.inboxes import Inboxes
from im.errors import InvalidInput
from im.models import PullResult
from im.storage.store import Store
from tests.helpers import eventually, untrimmed_seqs
from tests.im.conftest import draft, make_inboxes

DAY_SECS = 24 * 3600


def cached_inbox(store: Store, *, authoritative: bool = True) -> Inboxes:
    """A node's inboxes with a tail cache: the only writer (``authoritative``) or a cluster node."""
    return make_inboxes(store, sole_writer=authoritative, cache=InboxCache(max_entries=100_000))


async def store_reads(store: Store) -> int:
    status = await store.db.command("serverStatus")
    return int(status["opcounters"]["query"])


def same_page(a: PullResult, b: PullResult) -> None:
    assert a.to_dict() == b.to_dict()


async def test_pages_from_memory_equal_the_stores_and_cost_no_read(store: Store) -> None:
    cached = cached_inbox(store)
    plain = make_inboxes(store)
    await cached.append([draft("a", "b", f"m{i}", body={"n": i}) for i in range(12)])
    await cached.pull("b", after=0, limit=1)  # the inbox is known from here on
    await cached.stop()  # for `plain`, which reads heads from the counters

    before = await store_reads(store)
    pages = [await cached.pull("b", after=after, limit=limit)
             for after, limit in ((0, 100), (0, 5), (5, 5), (10, 5), (12, 5))]
    assert await store_reads(store) == before  # (serverStatus is a command, not a query)

    for (after, limit), page in zip(((0, 100), (0, 5), (5, 5), (10, 5), (12, 5)), pages, strict=True):
        same_page(page, await plain.pull("b", after=after, limit=limit))
    assert [m["body"] for m in pages[0].messages] == [{"n": i} for i in range(12)]
    assert pages[1].more and pages[1].next == 5 and not pages[4].messages and pages[4].next == 12


async def test_a_new_node_reads_the_head_once_then_serves_its_own_writes(store: Store) -> None:
    await cached_inbox(store).append([draft("a", "b", "old")])  # written before this node started
    fresh = cached_inbox(store)
    first = await fresh.pull("b", after=0, limit=10)
    assert [m["client_msg_id"] for m in first.messages] == ["old"]
    await fresh.append([draft("c", "b", "new")])
    before = await store_reads(store)
    page = await fresh.pull("b", after=0, limit=10)
    assert [m["client_msg_id"] for m in page.messages] == ["old", "new"]
    assert await store_reads(store) == before


async def test_interleaved_writers_in_a_cluster_never_hide_an_entry(store: Store) -> None:
    """Node A caches what it writes, node B writes in between: A's cached run is broken, so A must
    read the store and return B's entries too, in order, once."""
    node_a = cached_inbox(store, authoritative=False)
    node_b = cached_inbox(store, authoritative=False)
    expected = []
    for i in range(6):
        writer = node_a if i % 3 else node_b
        await writer.append([draft(f"s{i}", "target", f"m{i}")])
        expected.append(f"m{i}")
        page = await node_a.pull("target", after=0, limit=50)
        assert [m["client_msg_id"] for m in page.messages] == expected
        assert [m["seq"] for m in page.messages] == list(range(1, i + 2))


async def test_trimmed_entries_report_a_gap_like_the_store(store: Store) -> None:
    cached = cached_inbox(store)
    plain = make_inboxes(store)
    await cached.append([draft("a", "b", f"m{i}") for i in range(8)])
    await cached.ack("b", "phone", upto=5)
    await cached.stop()  # for `plain`, which reads heads from the counters
    page = await cached.pull("b", after=2, limit=10)
    assert page.gap and [m["seq"] for m in page.messages] == [6, 7, 8]
    same_page(page, await plain.pull("b", after=2, limit=10))


async def test_memory_is_bounded_and_eviction_falls_back_to_the_store(store: Store) -> None:
    cache = InboxCache(max_entries=10, max_per_user=4)
    cached = make_inboxes(store, sole_writer=True, cache=cache)
    await cached.append([draft("a", f"r{i}", f"m{i}") for i in range(8)])  # 16 entries
    assert len(cache) <= 10
    for i in range(8):
        page = await cached.pull(f"r{i}", after=0, limit=10)
        assert [m["client_msg_id"] for m in page.messages] == [f"m{i}"]


async def test_concurrent_acks_of_many_users_share_a_batch_and_trim_each_inbox(store: Store) -> None:
    cached = cached_inbox(store)
    users = [f"u{i}" for i in range(30)]
    await cached.append([draft("sender", user, f"m{user}{j}") for user in users for j in range(3)])
    results = await asyncio.gather(*(cached.ack(user, "phone", upto=2) for user in users),
                                   cached.ack("u0", "phone", upto=99), return_exceptions=True)
    assert isinstance(results[-1], InvalidInput)  # beyond the head: refused alone
    assert all(r.cursor == 2 and r.trimmed == 2 for r in results[:-1] if not isinstance(r, BaseException))
    assert not any(isinstance(r, BaseException) for r in results[:-1])
    for user in users:
        assert await untrimmed_seqs(store, user) == [3]


@pytest.mark.parametrize("authoritative", [True, False])
async def test_a_racing_duplicate_send_is_cached_once(store: Store, authoritative: bool) -> None:
    cached = cached_inbox(store, authoritative=authoritative)
    first, again = await asyncio.gather(cached.append([draft("a", "b", "same")]),
                                        cached.append([draft("a", "b", "same")]))
    assert first[0].msg_id == again[0].msg_id
    page = await cached.pull("b", after=0, limit=10)
    assert [m["client_msg_id"] for m in page.messages] == ["same"]


async def test_a_wrong_cached_head_is_detected_and_the_batch_written_again(store: Store) -> None:
    """Two nodes that each believe they are the only writer (a misconfiguration): the stale head is
    caught (a seq once given is never given again), and seqs stay unique and gapless."""
    node_a, node_b = cached_inbox(store), cached_inbox(store)
    for i in range(3):
        await node_a.append([draft("a", "target", f"a{i}")])
        await node_b.append([draft("b", "target", f"b{i}")])
    page = await node_a.pull("target", after=0, limit=50)
    assert [m["seq"] for m in page.messages][:1] == [1]
    assert await untrimmed_seqs(store, "target") == list(range(1, 7))
    # Each node saves the heads it advanced when it stops (and every HEAD_SAVE_SECS): the counter is the head.
    await node_a.stop()
    await node_b.stop()
    assert (await store.counters.find_one({"_id": "target"}) or {}).get("seq") == 6
    assert [m["seq"] for m in (await node_b.pull("target", after=0, limit=50)).messages] == list(range(1, 7))


async def test_a_single_writer_archives_without_counter_steps_and_saves_heads_later(store: Store) -> None:
    """One node, the only writer: a batch is one insert; the counters follow within the save interval."""
    alone = make_inboxes(store, sole_writer=True, cache=InboxCache(max_entries=100_000), head_save_secs=0.2)
    await alone.append([draft("a", "b", "0")])
    counted = await store.db.command("serverStatus")
    await alone.append([draft("a", "b", str(i)) for i in range(1, 4)])
    after = await store.db.command("serverStatus")
    assert after["opcounters"]["update"] == counted["opcounters"]["update"]  # no counter step
    assert await untrimmed_seqs(store, "b") == [1, 2, 3, 4]
    await eventually(lambda: store.counters.find_one({"_id": "b"}), until=lambda doc: (doc or {}).get("seq") == 4,
                     timeout_secs=2, what="the saved head")
    assert (await store.counters.find_one({"_id": "b"}) or {}).get("seq") == 4


async def test_a_restarted_single_writer_finds_heads_its_counters_missed(store: Store) -> None:
    """The node stopped before its heads were saved (a crash): the next one reads the archive's keys
    above the counters, so it neither gives a seq twice nor hides an entry."""
    before = cached_inbox(store)
    await before.append([draft("a", "b", str(i)) for i in range(5)])
    await store.counters.update_many({}, {"$set": {"seq": 0}})  # as if never saved
    after = cached_inbox(store)
    page = await after.pull("b", after=0, limit=10)
    assert [m["seq"] for m in page.messages] == [1, 2, 3, 4, 5] and page.head == 5
    (receipt,) = await after.append([draft("c", "b", "next")])
    assert receipt.seqs == {"b": 6, "c": 1}
    assert await untrimmed_seqs(store, "b") == [1, 2, 3, 4, 5, 6]


async def test_a_single_writer_keeps_what_an_interrupted_insert_stored(store: Store) -> None:
    """An ordered insert stops at a client_msg_id stored before: what went in before it is kept (its
    receipt is the one given), the duplicate gets the original receipt, and the rest is written next,
    without a hole in any inbox."""
    alone = cached_inbox(store)
    (original,) = await alone.append([draft("a", "b", "dup")])
    receipts = await alone.append([draft("a", "b", "x"), draft("a", "b", "dup"), draft("a", "b", "y")])
    assert [r.duplicate for r in receipts] == [False, True, False]
    assert receipts[1].msg_id == original.msg_id
    assert [r.seqs["b"] for r in receipts] == [2, 1, 3]
    assert await untrimmed_seqs(store, "b") == [1, 2, 3]
    page = await alone.pull("b", after=0, limit=10)
    assert [m["client_msg_id"] for m in page.messages] == ["dup", "x", "y"]


async def test_a_cluster_node_after_a_crashed_node_reads_past_the_counters_it_left_behind(store: Store) -> None:
    """A node that crashed before saving its heads leaves counters behind the archive's keys: a cluster
    node's pulls still show every stored entry (heads are read from the keys above the counters), its
    writes go on after them, and a clean stop saves the heads to the counters."""
    alone = cached_inbox(store)
    await alone.append([draft("a", "b", str(i)) for i in range(3)])
    await store.counters.update_many({}, {"$set": {"seq": 0}})  # crashed before saving its heads
    shared = cached_inbox(store, authoritative=False)
    page = await shared.pull("b", after=0, limit=10)
    assert [m["seq"] for m in page.messages] == [1, 2, 3] and page.head == 3

    again = cached_inbox(store, authoritative=False)
    (receipt,) = await again.append([draft("a", "b", "3")])
    assert receipt.seqs["b"] == 4
    await again.stop()
    assert (await store.counters.find_one({"_id": "b"}) or {}).get("seq") == 4


async def test_a_pull_after_another_nodes_news_is_served_from_memory(store: Store) -> None:
    """Cluster: the node holding the reader learns what another node committed (heads, epochs, entries)
    from the notify's news, so the pull that follows reads nothing from the store, and returns exactly
    what the store holds."""
    writer = make_inboxes(store, cache=InboxCache(max_entries=1000))
    reader = make_inboxes(store, cache=InboxCache(max_entries=1000), head_trust_secs=60)
    await writer.append([draft("a", "b", "first")])
    await reader.pull("b", after=0, limit=10)  # the reader's node confirms b's head in the store once
    news = InboxNews()
    await writer.append([draft("a", "b", f"m{i}", body={"n": i}) for i in range(5)], news=news)
    reader.learn(news)

    before = await store_reads(store)
    page = reader.pull_cached("b", after=1, limit=10)
    assert page is not None and await store_reads(store) == before
    assert [m["body"] for m in page.messages] == [{"n": i} for i in range(5)] and page.head == 6
    same_page(page, await make_inboxes(store).pull("b", after=1, limit=10))


async def test_a_head_learned_from_news_is_confirmed_in_the_store_before_readers_trust_it(store: Store) -> None:
    """A node that never read an inbox does not answer pulls from a head it only heard of, and an
    `after` beyond the head it knows is checked in the store, never reported as a gap."""
    writer = make_inboxes(store, cache=InboxCache(max_entries=1000))
    reader = make_inboxes(store, cache=InboxCache(max_entries=1000), head_trust_secs=60)
    news = InboxNews()
    await writer.append([draft("a", "b", f"m{i}") for i in range(3)], news=news)
    reader.learn(news)
    assert reader.pull_cached("b", after=0, limit=10) is None  # heard of, never confirmed
    assert [m["seq"] for m in (await reader.pull("b", after=0, limit=10)).messages] == [1, 2, 3]
    await writer.append([draft("a", "b", "m3")])  # no news reaches the reader this time
    page = await reader.pull("b", after=4, limit=10)  # the client heard of seq 4 elsewhere
    assert not page.gap and page.head == 4 and page.messages == []
