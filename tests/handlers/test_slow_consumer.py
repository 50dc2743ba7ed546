"""A WebSocket peer that stops reading is cut off after the write timeout, without slowing anyone else,
and recovers everything by pulling after it reconnects."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct

from tests.conftest import make_settings
from tests.helpers import Node, drain_inbox, eventually


def _masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    header = bytes([0x81])
    if length < 126:
        header += bytes([0x80 | length])
    elif length < 65536:
        header += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", length)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _non_reading_client(port: int, token: str, pulls: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    assert b" 101 " in sock.recv(1024)
    frame = _masked_text_frame(json.dumps({"t": "pull", "after": 0, "limit": 500}).encode())
    for _ in range(pulls):
        sock.sendall(frame)  # ...and never read a reply
    return sock


async def test_slow_consumer_is_disconnected_and_recovers_by_pulling(mongo, db_name, tmp_path) -> None:
    node = await Node.start(make_settings(mongo.url, db_name, tmp_path, ws_write_timeout_secs=1.0))
    try:
        alice, bob, carol = await node.user("alice"), await node.user("bob"), await node.user("carol")
        big = "x" * 16_000
        await asyncio.gather(*(node.send(alice, "bob", f"{i}:{big}") for i in range(60)))
        sock = await asyncio.to_thread(_non_reading_client, node.port, bob, 30)
        try:
            # Meanwhile another user is served normally.
            async with node.ws(carol) as c:
                await node.send(alice, "carol", "not delayed")
                assert await c.notify(timeout=5) == 1
                assert [m["body"] for m in (await c.pull(after=0))["messages"]] == ["not delayed"]
            # The stalled socket is cut off: its listener is gone.
            await eventually(lambda: node.service.hub.listener_count("bob") == 0, timeout_secs=15,
                             what="the stalled socket's listener gone")
            assert node.service.hub.listener_count("bob") == 0
        finally:
            sock.close()
        # Nothing is lost: bob reconnects and pulls everything, once, in order.
        messages, last = await drain_inbox(node, bob)
        assert sorted(int(m["body"].split(":")[0]) for m in messages) == list(range(60))
        assert len(messages) == 60 and last == 60
        assert [m["seq"] for m in messages] == list(range(1, 61))
    finally:
        await node.stop()
