"""Webhooks: a real receiver on 127.0.0.1 gets one signed POST per stored message, with retries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.web

from config import SettingsError
from im.ops.webhooks import WebhookSender, retry_delay_secs, sign, verify
from im.storage.embedded import EmbeddedMongo, free_port
from tests.conftest import make_settings
from tests.helpers import Node, eventually, running_node

SECRET = "webhook-test-secret"


class Receiver:
    """A webhook endpoint that fails its first ``fail_first`` requests with 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.accepted: list[dict[str, Any]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def app(self) -> tornado.web.Application:
        receiver = self

        class Hook(tornado.web.RequestHandler):
            def post(self) -> None:
                receiver.requests.append((dict(self.request.headers), self.request.body))
                if len(receiver.requests) <= receiver.fail_first:
                    self.set_status(503)
                    return
                receiver.accepted.append(json.loads(self.request.body))
                self.set_status(204)

        return tornado.web.Application([(r"/hook", Hook)])

    async def wait_accepted(self, count: int, timeout: float = 20) -> None:
        await eventually(lambda: len(self.accepted), until=lambda accepted: accepted >= count,
                         timeout_secs=timeout, what=f"{count} webhooks accepted")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    server = tornado.httpserver.HTTPServer(hook.app())
    server.listen(hook.port, "127.0.0.1")
    yield hook
    server.stop()


@pytest.fixture
async def hooked_node(mongo: EmbeddedMongo, db_name: str, tmp_path: Path, receiver: Receiver) -> AsyncIterator[Node]:
    settings = make_settings(mongo.url, db_name, tmp_path, webhook_urls=receiver.url, webhook_secret=SECRET)
    async with running_node(settings) as running:
        running.service.webhooks.first_retry_secs = 0.05  # retries within the test's time
        yield running


async def test_each_stored_message_is_posted_once_signed(hooked_node: Node, receiver: Receiver) -> None:
    alice, _bob = await hooked_node.user("alice"), await hooked_node.user("bob")
    receipts = [(await hooked_node.send(alice, "bob", f"m{i}", client_msg_id=f"k{i}")).body for i in range(3)]
    retry = await hooked_node.send(alice, "bob", "m0", client_msg_id="k0")  # a duplicate: no new webhook
    assert retry.body["duplicate"] is True
    await receiver.wait_accepted(3)
    await asyncio.sleep(0.3)
    assert sorted(e["msg_id"] for e in receiver.accepted) == sorted(r["msg_id"] for r in receipts)
    event = next(e for e in receiver.accepted if e["client_msg_id"] == "k1")
    assert event == {"type": "message.stored", "msg_id": receipts[1]["msg_id"], "conv": "d:alice:bob",
                     "from": "alice", "to": "bob", "kind": "text", "body": "m1", "client_msg_id": "k1",
                     "ts": receipts[1]["ts"], "recipients": ["alice", "bob"]}
    for headers, body in receiver.requests:
        assert verify(SECRET, headers["X-Im-Timestamp"], body, headers["X-Im-Signature"])
        assert not verify("another secret", headers["X-Im-Timestamp"], body, headers["X-Im-Signature"])


async def test_failed_posts_are_retried_with_backoff(hooked_node: Node, receiver: Receiver) -> None:
    receiver.fail_first = 2
    alice, _bob = await hooked_node.user("alice"), await hooked_node.user("bob")
    sent = await hooked_node.send(alice, "bob", "hello")
    await receiver.wait_accepted(1)
    assert [e["msg_id"] for e in receiver.accepted] == [sent.body["msg_id"]]
    attempts = [headers["X-Im-Delivery-Attempt"] for headers, _ in receiver.requests]
    assert attempts == ["1", "2", "3"]
    ok = 'im_webhook_deliveries_total{outcome="ok"} 1.0'
    metrics = await eventually(lambda: hooked_node.service.metrics.render().decode(),  # the sender counts
                               until=lambda text: ok in text, timeout_secs=10,         # after the answer
                               what="the delivery counted ok")
    assert 'im_webhook_deliveries_total{outcome="retry"} 2.0' in metrics


async def test_a_dead_receiver_does_not_slow_or_break_sending(mongo: EmbeddedMongo, db_name: str,
                                                              tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    settings = make_settings(mongo.url, db_name, tmp_path, webhook_urls=dead, webhook_secret=SECRET)
    node = await Node.start(settings)
    try:
        alice, _bob = await node.user("alice"), await node.user("bob")
        for i in range(5):
            assert (await node.send(alice, "bob", f"m{i}")).status == 201
    finally:
        await node.stop()


async def test_full_queue_drops_and_counts_instead_of_blocking() -> None:
    sender = WebhookSender(["http://127.0.0.1:9/hook"], SECRET, queue_size=2)  # not started: nothing drains
    for i in range(5):
        sender.enqueue({"msg_id": str(i)})
    assert sender.queue.qsize() == 2 and sender.dropped == 3


def test_signature_is_hmac_sha256_of_timestamp_and_body() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", 1700000000, body) == f"sha256={expected}"
    assert verify("k", "1700000000", body, sign("k", 1700000000, body), now=1700000100)
    assert not verify("k", "1700000000", body, sign("k", 1700000000, body), now=1700001000)  # too old
    assert not verify("k", "soon", body, "sha256=00")


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [retry_delay_secs(n, first_secs=1, max_secs=10) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]


def test_webhook_urls_need_a_secret_and_http(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="webhook_secret"):
        make_settings("mongodb://x", "db", tmp_path, webhook_urls="http://127.0.0.1:1/h")
    with pytest.raises(SettingsError, match="not an http"):
        make_settings("mongodb://x", "db", tmp_path, webhook_urls="ftp://127.0.0.1/h", webhook_secret="s")


async def test_receipt_entries_are_not_posted(hooked_node: Node, receiver: Receiver) -> None:
    alice, bob = await hooked_node.user("alice"), await hooked_node.user("bob")
    sent = (await hooked_node.send(alice, "bob", "deliver me")).body
    await receiver.wait_accepted(1)
    assert (await hooked_node.ack(bob, sent["seq"])).status == 200  # writes a delivered receipt to alice
    page = (await hooked_node.pull(alice, after=sent["sender_seq"])).body
    assert [m["kind"] for m in page["messages"]] == ["receipt"]  # the receipt exists...
    await asyncio.sleep(0.5)
    assert [e["kind"] for e in receiver.accepted] == ["text"]  # ...but only the message was posted
