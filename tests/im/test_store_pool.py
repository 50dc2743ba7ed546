"""The store driver's pool shrinks back after a burst (``IM_MONGO_MAX_IDLE_SECS``): descriptors return
to their baseline once clients leave, instead of the ~100 sockets a burst of logins opened staying."""

from __future__ import annotations

import asyncio
import os

from im.storage.embedded import EmbeddedMongo
from im.storage.store import Store
from tests.helpers import eventually


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
    return count


async def test_connections_a_burst_opened_are_closed_once_idle(mongo: EmbeddedMongo, db_name: str) -> None:
    store = Store(mongo.url, db_name, write_concern="1", max_idle_secs=1.0)
    try:
        await store.users.insert_one({"_id": "someone"})
        baseline = open_sockets()
        await asyncio.gather(*(store.users.find_one({"_id": "someone"}) for _ in range(60)))
        assert open_sockets() >= baseline + 2  # the burst opened connections of its own
        # The driver prunes idle connections about once a second.
        await eventually(open_sockets, until=lambda count: count <= baseline, timeout_secs=20, interval_secs=0.2,
                         what=f"back to the {baseline} sockets of before the burst")
        assert open_sockets() <= baseline
        assert await store.users.find_one({"_id": "someone"}) == {"_id": "someone"}  # reconnects on demand
    finally:
        await store.close()


async def test_the_urls_own_idle_time_wins_and_zero_keeps_connections(mongo: EmbeddedMongo, db_name: str) -> None:
    stores = [Store(mongo.url + "&maxIdleTimeMS=5000", db_name, max_idle_secs=1.0),
              Store(mongo.url, db_name, max_idle_secs=0.0),
              Store(mongo.url, db_name, max_idle_secs=30.0)]
    try:
        assert [s.client.options.pool_options.max_idle_time_seconds for s in stores] == [5.0, None, 30.0]
    finally:
        for s in stores:
            await s.close()
