"""Baseline 2, the framework ceiling: a bare Tornado WebSocket server that pushes the same payloads with
no storage, no auth and no seq: what Tornado alone costs per delivered frame.

``python -m bench.bare_tornado --port P``. Clients connect to ``/ws?user=U`` and send msgpack frames:
``{t: join, g}`` joins a group, ``{t: send, to, body, rid}`` pushes ``{t: msg, from, to, body}`` to every
socket of ``to`` (a user, or ``g:<name>``: every member but the sender) and replies ``{t: sent, rid}``.
The pushed frame is encoded once and written to each socket, as a fan-out server would.

The REST baseline (``bench/rest.py``): ``POST /api/v1/messages`` with ``{to, body, client_msg_id}`` and
``Authorization: Bearer <user>`` (the bearer is the sender's name: no auth) pushes the same frame to
``to``'s sockets and answers a receipt shaped like ours (201, ``{msg_id, client_msg_id, to, seq,
duplicate}``): the framework's cost of the REST send job with no storage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
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
        # One number per accepted REST message: a receipt has a seq, as ours does.
        self.seqs = itertools.count(1)

    def push(self, sender: str, to: str, body: str) -> None:
        """Encode the frame once and write it to every socket of ``to`` (a user, or ``g:<name>``: every
        member but the sender)."""
        targets = self.groups[to] - {sender} if to.startswith("g:") else {to}
        payload = msgpack.packb({"t": "msg", "from": sender, "to": to, "body": body})
        for user in targets:
            for sock in tuple(self.sockets.get(user, ())):
                with contextlib.suppress(tornado.websocket.WebSocketClosedError):
                    sock.write_message(payload, binary=True)


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
            self.registry.push(self.user, frame["to"], frame["body"])
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


class RestSend(tornado.web.RequestHandler):
    """``POST /api/v1/messages``: push the body to the recipient's sockets, answer a receipt."""

    def initialize(self, registry: Registry) -> None:
        self.registry = registry

    def post(self) -> None:
        sender = self.request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        fields: dict[str, Any] = json.loads(self.request.body)
        self.registry.push(sender, fields["to"], fields["body"])
        seq = next(self.registry.seqs)
        self.set_status(201)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"msg_id": str(seq), "client_msg_id": fields.get("client_msg_id"),
                                "to": fields["to"], "seq": seq, "duplicate": False}))


def make_app() -> tornado.web.Application:
    registry = Registry()
    return tornado.web.Application([
        (r"/ws", PushSocket, {"registry": registry}),
        (r"/api/v1/messages", RestSend, {"registry": registry}),
    ])


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
