"""A node offered more sends than it can store refuses the excess at once (503 overloaded, Retry-After)
instead of queueing it until clients time out; every send it admitted is stored and delivered."""

from __future__ import annotations

import asyncio
import os
import signal

from handlers.errors import error_frame
from im.delivery.admission import SendAdmission
from im.delivery.batching import GroupCommitter
from im.errors import Overloaded
from im.models import Draft, Receipt
from im.ops.metrics import Metrics
from im.storage.embedded import EmbeddedMongo
from tests.conftest import make_settings
from tests.helpers import Node, drain_inbox, eventually


def draft(n: int) -> Draft:
    return Draft(sender="a", to="b", conv="d:a:b", kind="text", body=f"m{n}", client_msg_id=f"c{n}",
                 recipients=("b", "a"))


async def test_the_bounds_follow_the_queue() -> None:
    release = asyncio.Event()

    async def write(drafts: list[Draft]) -> list[Receipt]:
        await release.wait()
        return [Receipt(msg_id=str(i), client_msg_id=d.client_msg_id, conv=d.conv, to=d.to, ts=0, seqs={})
                for i, d in enumerate(drafts)]

    committer = GroupCommitter(write, max_batch=10, max_in_flight=1)
    metrics = Metrics()
    by_count, by_wait = SendAdmission(max_queued=2), SendAdmission(max_wait_secs=0.05)
    written = [committer.enqueue(draft(0))]  # in flight, held by the store
    await asyncio.sleep(0)
    written += [committer.enqueue(draft(1)), committer.enqueue(draft(2))]  # queued
    by_wait.check(committer, metrics)  # nobody waited long yet
    try:
        by_count.check(committer, metrics)
        raise AssertionError("a full queue admitted a send")
    except Overloaded as refused:
        assert refused.code == "overloaded" and refused.retry_after_secs >= 1
    await asyncio.sleep(0.1)
    try:
        by_wait.check(committer, metrics)
        raise AssertionError("a queue whose oldest send waited 0.1 s admitted one")
    except Overloaded:
        pass
    release.set()
    await asyncio.gather(*written)
    by_count.check(committer, metrics)  # drained: admitted again
    by_wait.check(committer, metrics)
    assert error_frame(Overloaded("full", retry_after_secs=0.2), rid=7) == {
        "t": "error", "code": "overloaded", "message": "full", "rid": 7, "retry_after": 1}


async def test_a_stalled_store_fills_the_queue_and_the_rest_is_refused_at_once(tmp_path, db_name) -> None:
    store = EmbeddedMongo(tmp_path / "store", sync_on_commit=False).start()
    node = await Node.start(make_settings(store.url, db_name, tmp_path, send_queue_max=2,
                                          send_queue_max_wait_secs=0))
    try:
        alice, bob = await node.user("alice"), await node.user("bob")
        assert (await node.send(alice, "bob", "warm", client_msg_id="w")).status == 201
        committer = node.service._sender.committer
        assert store.pid is not None
        os.kill(store.pid, signal.SIGSTOP)  # every write now waits
        try:
            admitted = [asyncio.ensure_future(node.send(alice, "bob", "m0", client_msg_id="c0"))]
            await eventually(lambda: committer.queued == 0 and not admitted[0].done(), what="m0 in flight")
            admitted += [asyncio.ensure_future(node.send(alice, "bob", f"m{i}", client_msg_id=f"c{i}"))
                         for i in (1, 2)]
            await eventually(lambda: committer.queued, until=lambda n: n == 2, what="two sends queued")
            refused = await asyncio.wait_for(node.send(alice, "bob", "m3", client_msg_id="c3"), 5)
            assert refused.status == 503 and refused.error_code == "overloaded"
            assert int(refused.headers["Retry-After"]) >= 1
        finally:
            os.kill(store.pid, signal.SIGCONT)
        assert [r.status for r in await asyncio.gather(*admitted)] == [201, 201, 201]
        assert (await node.send(alice, "bob", "m3", client_msg_id="c3")).status == 201  # the retry
        messages, _ = await drain_inbox(node, bob)
        assert [m["body"] for m in messages if m["from"] == "alice"] == ["warm", "m0", "m1", "m2", "m3"]
        metrics = (await node.http.fetch(node.base_url + "/metrics")).body.decode()
        assert 'im_sends_refused_total{reason="queue_full"} 1.0' in metrics
    finally:
        await node.stop()
        store.stop()
