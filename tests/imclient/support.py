"""Helpers for the SDK tests: a message collector and a proxy that loses replies on purpose."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tests.helpers import eventually


class Inbox:
    """Collects what ``on_message`` hands over, in the order it was handed over."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.gaps: list[dict[str, Any]] = []

    def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def on_gap(self, reply: dict[str, Any]) -> None:
        self.gaps.append(reply)

    def bodies(self, sender: str | None = None) -> list[str]:
        return [m["body"] for m in self.messages if sender is None or m["from"] == sender]

    async def wait_for(self, count: int, *, sender: str | None = None, timeout: float = 20.0) -> list[str]:
        """Wait until ``count`` messages (from ``sender``) arrived; return their bodies."""
        return await eventually(lambda: self.bodies(sender), until=lambda bodies: len(bodies) >= count,
                                timeout_secs=timeout, what=f"{count} messages arrived")


class ReplyDroppingProxy:
    """A TCP proxy on 127.0.0.1 that forwards requests but, for the next ``drop`` requests starting with
    ``drop_prefix`` (sends), reads the server's whole answer and then closes the client's connection
    without passing it on.

    This is the "stored, but the receipt was lost" case a send retry must handle. Only the first request
    of a connection is looked at: the SDK sends on a kept-alive connection, and the one it opens for
    its first send is new.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.drop = 0
        self.dropped = 0
        self.drop_prefix = b"POST /api/v1/messages "
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> ReplyDroppingProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        first = await reader.read(65536)
        up_writer.write(first)
        dropping = self.drop > 0 and first.startswith(self.drop_prefix)
        if dropping:
            self.drop -= 1

        async def pump_up() -> None:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()

        upward = asyncio.create_task(pump_up())
        try:
            answer = b""
            while data := await asyncio.wait_for(up_reader.read(65536), 30):
                if dropping:
                    answer += data
                    if _answer_complete(answer):
                        self.dropped += 1  # read whole by the proxy, never passed on
                        break
                else:
                    writer.write(data)
                    await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            upward.cancel()
            writer.close()
            up_writer.close()


def _answer_complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole HTTP answer with a ``Content-Length`` (as the server sends)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False
