"""Baseline 2, the framework ceiling: a bare Tornado WebSocket server that pushes the same payloads with
no storage, no auth and no seq: what Tornado alone costs per delivered frame.

``python -m bench.bare_tornado --port P``. Clients connect to ``/ws?user=U`` and send msgpack frames:
``{t: join, g}`` joins a group, ``{t: send, to, body, rid}`` pushes ``{t: msg, from, to, body}`` to every
socket of ``to`` (a user, or ``g:<name>``: every member but the sender) and replies ``{t: sent, rid}``.
The pushed frame is encoded once and written to each socket, as a fan-out server would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections import defaultdict
from typing import Any

import msgpack
import tornado.web
import tornado.websocket

from im.ops import eventloop

__all__ = ["make_app"]


class Registry:
    def __init__(self) -> None:
        self.sockets: defaultdict[str, set[PushSocket]] = defaultdict(set)
        self.groups: defaultdict[str, set[str]] = defaultdict(set)


class PushSocket(tornado.websocket.WebSocketHandler):
    def initialize(self, registry: Registry) -> None:
        self.registry = registry
        self.user = ""

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self) -> None:
        self.user = self.get_query_argument("user")
        self.registry.sockets[self.user].add(self)

    async def on_message(self, message: str | bytes) -> None:
        frame: dict[str, Any] = msgpack.unpackb(message)
        kind = frame.get("t")
        if kind == "join":
            self.registry.groups["g:" + frame["g"]].add(self.user)
            reply: dict[str, Any] = {"t": "joined"}
        elif kind == "send":
            to = frame["to"]
            targets = self.registry.groups[to] - {self.user} if to.startswith("g:") else {to}
            payload = msgpack.packb({"t": "msg", "from": self.user, "to": to, "body": frame["body"]})
            for user in targets:
                for sock in tuple(self.registry.sockets.get(user, ())):
                    with contextlib.suppress(tornado.websocket.WebSocketClosedError):
                        sock.write_message(payload, binary=True)
            reply = {"t": "sent"}
        else:
            reply = {"t": "error"}
        if "rid" in frame:
            reply["rid"] = frame["rid"]
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            await self.write_message(msgpack.packb(reply), binary=True)

    def on_close(self) -> None:
        sockets = self.registry.sockets.get(self.user)
        if sockets is not None:
            sockets.discard(self)
            if not sockets:
                del self.registry.sockets[self.user]


def make_app() -> tornado.web.Application:
    return tornado.web.Application([(r"/ws", PushSocket, {"registry": Registry()})])


async def serve(port: int) -> None:
    server = make_app().listen(port, "127.0.0.1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    eventloop.run(serve(parser.parse_args().port))  # the loop our server runs on: a like-for-like ceiling
    return 0


if __name__ == "__main__":
    sys.exit(main())
