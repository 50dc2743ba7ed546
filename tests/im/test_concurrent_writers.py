"""Several nodes write the same inboxes at once, with no transaction and no counter step: every inbox
still holds seqs 1..n with no hole and no duplicate, each message once per recipient, also when a node
is killed in the middle of a batch."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from im.delivery.batching import GroupCommitter
from im.delivery.inboxes import Inboxes
from im.delivery.leases import LocalLeases, StoreLeases
from im.delivery.writer import CONTENTION_PAUSE_MAX_SECS, CONTENTION_PAUSE_SECS, contention_pause
from im.models import Draft
from im.storage.embedded import EmbeddedMongo
from im.storage.store import Store
from tests.conftest import next_db_name
from tests.helpers import untrimmed_seqs
from tests.im.conftest import make_inboxes

ROOT = Path(__file__).resolve().parents[2]


def _draft(sender: str, n: int, recipients: tuple[str, ...]) -> Draft:
    return Draft(sender=sender, to=recipients[0], conv=f"g:{sender}", kind="text", body=f"{sender}-{n}",
                 client_msg_id=f"{sender}-{n}", recipients=recipients)


async def _assert_gapless(store: Store, inboxes: list[str]) -> dict[str, int]:
    """Every inbox is 1..n, each entry a distinct message; returns n per inbox."""
    sizes = {}
    for user in inboxes:
        seqs = await untrimmed_seqs(store, user)
        assert seqs == list(range(1, len(seqs) + 1)), (user, seqs)
        docs = await store.messages.find({"rcpt.u": user}, {"cmid": 1}).to_list(None)
        per_message = Counter(d["cmid"] for d in docs)
        assert len(docs) == len(seqs) and all(c == 1 for c in per_message.values()), user
        sizes[user] = len(seqs)
    return sizes


writer_plans = st.lists(  # per node: per writer: batches of recipient sets
    st.lists(st.lists(st.lists(st.sampled_from("abcd"), min_size=1, max_size=4, unique=True).map(tuple),
                      min_size=1, max_size=6), min_size=1, max_size=4),
    min_size=2, max_size=4)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=writer_plans, seed=st.integers(0, 2**16))
async def test_concurrent_writers_on_several_nodes_keep_every_inbox_gapless(
        mongo: EmbeddedMongo, plan: list[list[list[tuple[str, ...]]]], seed: int) -> None:
    store = Store(mongo.url, next_db_name(), write_concern="1")
    await store.ensure_indexes()
    leases: dict[str, tuple[str, float]] = {}  # what Redis holds for a cluster's nodes
    nodes: list[Inboxes] = [make_inboxes(store, leases=LocalLeases(leases, f"node{i}")) for i in range(len(plan))]
    # Each node writes through its own group commit, as a server does: its sends share batches.
    commits = [GroupCommitter(node.append, max_batch=64, max_in_flight=2) for node in nodes]
    try:
        rng = random.Random(seed)
        expected: Counter[str] = Counter()

        async def writer(commit: GroupCommitter, name: str, batches: list[tuple[str, ...]]) -> None:
            for n, recipients in enumerate(batches):
                size = rng.randint(1, 3)
                drafts = [_draft(name, n * 10 + i, recipients) for i in range(size)]
                expected.update(user for d in drafts for user in d.recipients)
                await asyncio.gather(*(commit.enqueue(d) for d in drafts))
                await asyncio.sleep(rng.random() / 200)

        await asyncio.gather(*(writer(commit, f"w{i}x{j}", batches)
                               for i, (commit, writers) in enumerate(zip(commits, plan, strict=True))
                               for j, batches in enumerate(writers)))
        sizes = await _assert_gapless(store, list("abcd"))
        assert sizes == {user: expected[user] for user in "abcd"}
    finally:
        for node in nodes:
            await node.stop()
        await store.client.drop_database(store.db.name)
        await store.close()


async def test_a_node_killed_mid_batch_leaves_no_hole_and_the_others_write_on(mongo: EmbeddedMongo) -> None:
    db = next_db_name()
    store = Store(mongo.url, db, write_concern="1")
    await store.ensure_indexes()
    killed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.im.writer_proc", mongo.url, db, "doomed", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE)
    try:
        assert killed.stdout is not None
        assert (await asyncio.wait_for(killed.stdout.readline(), 30)).strip() == b"ready"
        await asyncio.sleep(0.3)  # writing
        # Turns are taken in the store, as nodes do while Redis is down: the writer process shares them.
        survivors = [make_inboxes(store, leases=StoreLeases(store, f"node{i}")) for i in range(2)]
        rng = random.Random(7)

        async def survivor(node: Inboxes, name: str) -> None:
            for n in range(60):
                recipients = tuple(rng.sample("pqr", rng.randint(1, 3)))
                await node.append([_draft(name, n * 10 + i, recipients) for i in range(rng.randint(1, 5))])
                if n == 20 and name == "s0":
                    killed.send_signal(signal.SIGKILL)  # in the middle of whatever batch it was writing

        await asyncio.gather(survivor(survivors[0], "s0"), survivor(survivors[1], "s1"))
        assert await asyncio.wait_for(killed.wait(), 10) == -signal.SIGKILL
        sizes = await _assert_gapless(store, list("pqr"))
        assert all(size > 0 for size in sizes.values())
        # The dead node's heads are not saved: a node that starts now reads past its counters.
        (receipt,) = await make_inboxes(store).append([_draft("late", 0, ("p",))])
        assert receipt.seqs["p"] == sizes["p"] + 1
    finally:
        if killed.returncode is None:
            killed.kill()
            await killed.wait()
        await store.client.drop_database(db)
        await store.close()


def test_pauses_after_lost_races_double_up_to_a_cap() -> None:
    pauses = [contention_pause(n, 0.999) for n in range(1, 12)]
    assert pauses == sorted(pauses) and pauses[0] < CONTENTION_PAUSE_SECS
    assert pauses[-1] <= CONTENTION_PAUSE_MAX_SECS and pauses[-1] > CONTENTION_PAUSE_MAX_SECS * 0.99
    assert contention_pause(5, 0.0) == 0.0
