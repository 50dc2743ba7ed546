"""A writer node in a process of its own, for the kill test: it appends batches of messages to shared
inboxes until it is killed (``python -m tests.im.writer_proc URL DB NODE``)."""

from __future__ import annotations

import asyncio
import math
import random
import sys

from im.delivery.heads import HeadBook
from im.delivery.inboxes import Inboxes
from im.delivery.leases import StoreLeases
from im.delivery.seqs import Seqs
from im.errors import StoreUnavailable
from im.models import Draft
from im.storage.store import Store

INBOXES = ("p", "q", "r")


async def main(url: str, db: str, node: str) -> None:
    store = Store(url, db, write_concern="1")
    # Turns at contested inboxes are taken in the store, shared with the test's other writers.
    seqs = Seqs(store, HeadBook(store, save_secs=0.5, trust_secs=math.inf), StoreLeases(store, node))
    inboxes = Inboxes(store, seqs, device_idle_secs=3600, max_devices_per_user=3)
    rng = random.Random(node)
    n = 0
    print("ready", flush=True)
    while True:
        batch = []
        for _ in range(rng.randint(1, 20)):
            n += 1
            recipients = tuple(rng.sample(INBOXES, rng.randint(1, len(INBOXES))))
            batch.append(Draft(sender=node, to=recipients[0], conv=f"g:{node}", kind="text", body=f"{node}-{n}",
                               client_msg_id=f"{node}-{n}", recipients=recipients))
        try:
            await inboxes.append(batch)
        except StoreUnavailable:
            continue  # a node answers 503 and serves on; its client sends again
        await asyncio.sleep(rng.random() / 20)  # a node serving clients, not a tight loop


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
