"""kill -9 the store mid-stream, restart it: sends during the outage get a clear 503, retries with the
same client_msg_id succeed once it is back, and nothing acknowledged as sent is lost, doubled or
reordered."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from im.storage.embedded import EmbeddedMongo
from tests.conftest import make_settings
from tests.helpers import Node, drain_inbox
from tests.reliability_report import record

MESSAGES_PER_SENDER = 60
SENDERS = 4
# The outage lasts this long; sends keep being retried through it.
OUTAGE_SECS = 3.0
# The store is killed once this many sends were acknowledged (a quarter of them).
CRASH_AFTER_ACKNOWLEDGED = SENDERS * MESSAGES_PER_SENDER // 4


async def test_store_killed_and_restarted_mid_stream(tmp_path: Path) -> None:
    store = EmbeddedMongo(tmp_path / "db", log_path=tmp_path / "db.log").start()
    node = await Node.start(make_settings(store.url, "outage", tmp_path / "node", store_timeout_secs=2.0,
                                          write_concern="1"))
    outage_errors: list[int] = []
    acknowledged: dict[str, list[str]] = {}
    quarter_done = asyncio.Event()
    try:
        bob = await node.user("bob")
        senders = {f"s{i}": await node.user(f"s{i}") for i in range(SENDERS)}

        async def send_all(name: str, token: str) -> None:
            acknowledged[name] = []
            for n in range(MESSAGES_PER_SENDER):
                client_msg_id = f"{name}-{n}"
                while True:  # what a client (the SDK) does: retry the same id until it is acknowledged
                    response = await node.send(token, "bob", client_msg_id, client_msg_id=client_msg_id)
                    if response.status in (200, 201):
                        acknowledged[name].append(client_msg_id)
                        if sum(len(v) for v in acknowledged.values()) >= CRASH_AFTER_ACKNOWLEDGED:
                            quarter_done.set()
                        break
                    assert response.status == 503, response.body
                    assert response.error_code == "store_unavailable" and response.body["error"]["message"]
                    outage_errors.append(response.status)
                    await asyncio.sleep(0.2)
                await asyncio.sleep(0.01)

        async def crash_store() -> None:
            # Mid-stream by count, not by a fixed delay: a faster server had finished every send
            # before a kill at 1 s, and the test then tested nothing.
            await quarter_done.wait()
            store.kill()  # SIGKILL: no clean shutdown
            await asyncio.sleep(OUTAGE_SECS)
            store.start()  # same port, same data directory

        started = time.monotonic()
        await asyncio.gather(crash_store(), *(send_all(n, t) for n, t in senders.items()))
        elapsed = time.monotonic() - started
        assert outage_errors, "the outage was not observed: the test did not test anything"

        messages, _ = await drain_inbox(node, bob)
        bodies = [m["body"] for m in messages]
        expected = sum(len(v) for v in acknowledged.values())
        lost = sum(1 for ids in acknowledged.values() for i in ids if i not in set(bodies))
        duplicated = len(bodies) - len(set(bodies))
        reordered = sum(
            1 for name in acknowledged
            if [b for b in bodies if b.startswith(f"{name}-")] != acknowledged[name]
        )
        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
        assert (lost, duplicated, reordered) == (0, 0, 0)
        assert len(bodies) == expected == SENDERS * MESSAGES_PER_SENDER
        record("faults", "SecantusDB killed (-9) and restarted mid-stream, single node",
               {"acknowledged": expected, "lost": lost, "duplicated": duplicated, "reordered": reordered,
                "503 during outage": len(outage_errors), "seconds": round(elapsed, 1)})
    finally:
        await node.stop()
        store.stop()
