"""A client over its request limit gets 429 with Retry-After on a connection it can keep using (the
refused request's body is read, and dropped, before the answer); signed-in callers are limited per
device, not per address."""

from __future__ import annotations

import asyncio
import json
import socket

from tests.conftest import make_settings
from tests.helpers import Node

# Large enough that the client is still writing it when an early answer would have closed the socket.
BODY_CHARS = 60_000


def _posts_on_one_connection(port: int, token: str, count: int) -> list[tuple[int, str | None]]:
    """POST ``count`` large messages over one kept-alive socket; (status, Retry-After) of each, or
    (0, None) from the first that found the connection closed."""
    body = json.dumps({"to": "bob", "body": "x" * BODY_CHARS, "client_msg_id": "same"}).encode()
    head = (f"POST /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    answers: list[tuple[int, str | None]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rb")
        for _ in range(count):
            try:
                sock.sendall(head + body)
                status_line = stream.readline()
                if not status_line:
                    raise ConnectionError("closed")
                headers: dict[str, str] = {}
                while (line := stream.readline().decode()) not in ("\r\n", ""):
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                stream.read(int(headers.get("content-length", "0")))
                answers.append((int(status_line.split()[1]), headers.get("retry-after")))
            except (ConnectionError, OSError):
                answers.append((0, None))
                break
    return answers


async def test_over_the_limit_the_answer_is_429_and_the_connection_stays(mongo, db_name, tmp_path) -> None:
    settings = make_settings(mongo.url, db_name, tmp_path, rate_device_per_sec=0.01, rate_device_burst=2,
                             max_text_chars=BODY_CHARS, max_body_bytes=2 * BODY_CHARS)
    node = await Node.start(settings)
    try:
        alice = await node.user("alice")
        await node.register("bob")
        answers = await asyncio.to_thread(_posts_on_one_connection, node.port, alice, 4)
        assert [status for status, _ in answers] == [201, 200, 429, 429]  # the same client_msg_id twice
        assert all(int(retry) >= 1 for status, retry in answers if status == 429)
    finally:
        await node.stop()


async def test_signed_in_callers_behind_one_address_each_have_their_own_bucket(mongo, db_name, tmp_path) -> None:
    """Twenty API callers behind one address (a NAT, a backend) are limited per device, not together;
    a request without a valid token still counts against the address."""
    settings = make_settings(mongo.url, db_name, tmp_path, rate_ip_per_sec=0.01, rate_ip_burst=45,
                             rate_device_per_sec=0.01, rate_device_burst=3)
    node = await Node.start(settings)
    try:
        tokens = [await node.user(f"u{i}") for i in range(20)]  # 40 requests of the address's 45
        pulls = [(await node.pull(token)).status for token in tokens for _ in range(3)]
        assert pulls == [200] * 60  # 60 requests from one address, 3 per device: all within limits
        over = await node.pull(tokens[0])
        assert over.status == 429 and over.error_code == "rate_limited" and int(over.headers["Retry-After"]) >= 1
        assert (await node.pull(tokens[1])).status == 429  # each device spent its own 3
        anonymous = [(await node.request("GET", "/api/v1/inbox")).status for _ in range(6)]
        assert anonymous[:5] == [401] * 5 and anonymous[5] == 429  # the address's last 5, then refused
    finally:
        await node.stop()
