"""redis-server killed (-9) mid-stream and restarted while SDK clients on three nodes exchange messages:
sends keep being stored and acknowledged without Redis, cross-node notifies resume once the nodes have
resubscribed, and nothing acknowledged is lost, doubled or reordered.

The fault-suite version of tests/cluster/test_redis_outage.py (two raw clients): here many SDK users
on both transports, with the ledger of tests/reliability/fleet.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.cluster.conftest import StartNodes
from tests.cluster.procs import RedisServer
from tests.helpers import eventually
from tests.reliability.fleet import Fleet
from tests.reliability.test_node_kill import CLUSTER_SETTINGS
from tests.reliability_report import record

USERS = 24
PER_USER = 60
MESSAGES = USERS * PER_USER
NODES = 3
# Redis dies once this share of the messages has been acknowledged, and stays down this long while
# the clients keep sending.
KILL_AT_FRACTION = 0.3
OUTAGE_SECS = 4.0
DELIVERY_TIMEOUT_SECS = 120.0
RESUBSCRIBE_TIMEOUT_SECS = 30.0


def kill_redis(server: RedisServer) -> None:
    """SIGKILL: no goodbye to subscribers, every key (presence) gone with it (nothing is persisted)."""
    process, server.process = server.process, None
    assert process is not None
    process.kill()
    process.wait()


@pytest.mark.timeout(600)
async def test_redis_killed_and_restarted_mid_stream(start_nodes: StartNodes, redis_server: RedisServer) -> None:
    nodes = start_nodes(NODES, **CLUSTER_SETTINGS)
    fleet = Fleet([n.client.base_url for n in nodes], USERS, seed=11)
    await fleet.start()
    during_outage = 0
    try:
        down_now = fleet.reached(int(MESSAGES * KILL_AT_FRACTION))

        async def outage() -> None:
            nonlocal during_outage
            await down_now.wait()
            kill_redis(redis_server)
            before = len(fleet.sent)
            await asyncio.sleep(OUTAGE_SECS)
            during_outage = len(fleet.sent) - before
            redis_server.start()  # same port, empty: the nodes must re-register and resubscribe

        started = time.monotonic()
        await asyncio.gather(fleet.send_all(PER_USER, lanes=2), outage())
        send_secs = time.monotonic() - started
        catch_up_secs = await fleet.wait_delivered(DELIVERY_TIMEOUT_SECS)
        ledger = fleet.ledger()
    finally:
        await fleet.close()

    assert during_outage > 0, "nothing was acknowledged while Redis was down: sends must not need it"
    channels = [f"im:notify:{n.node_id}" for n in nodes]
    await eventually(lambda: redis_server.subscribers(*channels),
                     until=lambda counts: counts == dict.fromkeys(channels, 1),
                     timeout_secs=RESUBSCRIBE_TIMEOUT_SECS, interval_secs=0.3, what="every node resubscribed")
    record("faults", f"redis-server killed (-9) and restarted mid-stream: {USERS} SDK users on {NODES} nodes", {
        "acknowledged": ledger.acknowledged, "lost": ledger.lost, "duplicated": ledger.duplicated,
        "reordered": ledger.reordered, "deliveries checked": ledger.deliveries_checked,
        "unconfirmed sends": ledger.unconfirmed, "acknowledged during outage": during_outage,
        "outage seconds": OUTAGE_SECS, "seconds": round(send_secs + catch_up_secs, 1),
        "msg/s": round(ledger.acknowledged / send_secs),
    })
    assert ledger.acknowledged == MESSAGES - ledger.unconfirmed
    assert ledger.unconfirmed <= MESSAGES // 100, ledger  # the sender was told; rare even under overload
    assert ledger.failures == dict.fromkeys(ledger.failures, 0), ledger
