"""Client loops for cross-node tests: receive over WebSocket or long-poll, send over WebSocket or REST.

Receivers check the delivery promise as a client sees it: every message exactly once (by seq), in the
order it was sent.
"""

from __future__ import annotations

from typing import Any

from tests.helpers import Node, WsClient

# A long-poll waits this long unless a notify wakes it; tests that bound their runtime below it prove
# the notify crossed the nodes.
POLL_TIMEOUT_SECS = 55


def _take(messages: list[dict[str, Any]], last: int, sender: str, got: list[dict[str, Any]]) -> int:
    for message in messages:
        assert message["seq"] > last, f"seq {message['seq']} after {last}: duplicate or out of order"
        last = message["seq"]
        if message["from"] == sender and message["kind"] != "receipt":  # receipts: delivered/read notes
            got.append(message)
    return last


async def receive_ws(ws: WsClient, *, sender: str, count: int, notify_timeout: float = 90) -> list[str]:
    """Wait for notifies and pull after the last seq each time, as a WebSocket client does."""
    got: list[dict[str, Any]] = []
    last = 0
    while len(got) < count:
        await ws.notify(timeout=notify_timeout)
        while True:
            reply = await ws.pull(after=last, limit=500)
            assert reply["t"] == "msgs" and not reply["gap"], reply
            last = _take(reply["messages"], last, sender, got)
            if not reply["more"]:
                break
    return [m["body"] for m in got]


async def receive_poll(node: Node, token: str, *, sender: str, count: int) -> list[str]:
    """Long-poll after the last seq until ``count`` messages from ``sender`` arrived."""
    got: list[dict[str, Any]] = []
    last = 0
    while len(got) < count:
        response = await node.poll(token, after=last, timeout=POLL_TIMEOUT_SECS, limit=500)
        assert response.status == 200 and not response.body["gap"], response.body
        last = _take(response.body["messages"], last, sender, got)
    return [m["body"] for m in got]


async def send_ws(ws: WsClient, *, to: str, prefix: str, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        reply = await ws.send(to, f"{prefix}{i}", client_msg_id=f"{prefix}-{i}")
        assert reply["t"] == "sent", reply


async def send_rest(node: Node, token: str, *, to: str, prefix: str, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        response = await node.send(token, to, f"{prefix}{i}", client_msg_id=f"{prefix}-{i}")
        assert response.status == 201, response.body


def expected(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]
