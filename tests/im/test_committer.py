"""Natural batching: batches in flight at once never share an inbox, and per-inbox order is the queue's."""

from __future__ import annotations

import asyncio

from im.delivery.batching import NaturalBatcher


class Store:
    """A fake batch writer that holds each batch until the test releases it."""

    def __init__(self) -> None:
        self.started: list[list[str]] = []
        self.finished: list[list[str]] = []
        self.gates: list[asyncio.Event] = []

    async def write(self, batch: list[tuple[str, tuple[str, ...]]]) -> list[str]:
        names = [name for name, _ in batch]
        gate = asyncio.Event()
        self.started.append(names)
        self.gates.append(gate)
        await gate.wait()
        self.finished.append(names)
        return [f"ok:{name}" for name in names]


def batcher(store: Store, max_in_flight: int) -> NaturalBatcher[tuple[str, tuple[str, ...]], str]:
    return NaturalBatcher(store.write, max_batch=10, what="items", failure="failed",
                          keys_of=lambda item: item[1], max_in_flight=max_in_flight)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_disjoint_batches_are_written_at_once_and_shared_inboxes_wait() -> None:
    store = Store()
    b = batcher(store, max_in_flight=2)
    first = asyncio.ensure_future(b.submit(("a", ("x", "y"))))
    await settle()
    later = [asyncio.ensure_future(b.submit(item)) for item in
             (("b", ("x",)), ("c", ("z",)), ("d", ("z", "x")), ("e", ("w",)))]
    await settle()
    # a holds x and y; b (x) must wait; c (z) takes the second slot; d and e queue.
    assert store.started == [["a"], ["c"]]
    store.gates[0].set()
    await settle()
    # x is free again: b goes, and e (w) with it; d waits behind c (z) in flight and b (x) before it.
    assert store.started[2] == ["b", "e"]
    store.gates[1].set()
    store.gates[2].set()
    await settle()
    assert store.started[3] == ["d"]
    store.gates[3].set()
    assert await first == "ok:a"
    assert [await f for f in later] == ["ok:b", "ok:c", "ok:d", "ok:e"]
    # Per-inbox order is the queue's: x was written a, b, d; z was written c, d.
    order = [name for batch in store.finished for name in batch]
    assert order.index("a") < order.index("b") < order.index("d")
    assert order.index("c") < order.index("d")


async def test_one_in_flight_writes_everything_queued_meanwhile_as_one_batch() -> None:
    store = Store()
    b = batcher(store, max_in_flight=1)
    futures = [asyncio.ensure_future(b.submit((name, (name,)))) for name in "pqrs"]
    await settle()
    assert store.started == [["p"]]
    store.gates[0].set()
    await settle()
    assert store.started[1] == ["q", "r", "s"]
    store.gates[1].set()
    assert [await f for f in futures] == ["ok:p", "ok:q", "ok:r", "ok:s"]
    await b.drain()


async def test_items_sharing_an_inbox_go_in_one_batch_in_queue_order() -> None:
    store = Store()
    b = batcher(store, max_in_flight=2)
    first = asyncio.ensure_future(b.submit(("a", ("x",))))
    await settle()
    later = [asyncio.ensure_future(b.submit(item)) for item in
             (("b", ("y", "x")), ("c", ("y",)), ("d", ("y", "z")), ("e", ("z",)))]
    await settle()
    # b shares x with a in flight, so it waits; c, d and e share an inbox with an item waiting before
    # them, so they wait too (nothing overtakes within an inbox).
    assert store.started == [["a"]]
    store.gates[0].set()
    await settle()
    # Then they go together, in queue order: several messages to one inbox share one batch (and one
    # counter step per inbox), instead of one batch each.
    assert store.started[1] == ["b", "c", "d", "e"]
    store.gates[1].set()
    assert await first == "ok:a"
    assert [await f for f in later] == ["ok:b", "ok:c", "ok:d", "ok:e"]
