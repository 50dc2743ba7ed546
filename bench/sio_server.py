"""Baseline 3, the peer a Python user would pick instead: a python-socketio server (aiohttp mode) doing
the same fan-out as ours, without durability, seq or auth.

``python -m bench.sio_server --port P``. Clients connect with ``auth={"user": U}`` and join their own
room; ``join {g}`` enters ``g:<g>``; ``send {to, body}`` emits ``msg {from, to, body}`` to the room ``to``
(skipping the sender) and acknowledges with ``"sent"``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import socketio
from aiohttp import web

from im.ops import eventloop

__all__ = ["make_app"]


def make_app() -> web.Application:
    sio = socketio.AsyncServer(
        async_mode="aiohttp", cors_allowed_origins="*", logger=False, engineio_logger=False
    )
    users: dict[str, str] = {}

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> bool:
        user = (auth or {}).get("user")
        if not user:
            return False
        users[sid] = user
        await sio.enter_room(sid, user)
        return True

    @sio.event
    async def disconnect(sid: str, reason: Any = None) -> None:
        users.pop(sid, None)

    @sio.event
    async def join(sid: str, data: dict[str, Any]) -> str:
        await sio.enter_room(sid, "g:" + data["g"])
        return "joined"

    @sio.event
    async def send(sid: str, data: dict[str, Any]) -> str:
        await sio.emit(
            "msg",
            {"from": users.get(sid, ""), "to": data["to"], "body": data["body"]},
            room=data["to"],
            skip_sid=sid,
        )
        return "sent"

    app = web.Application()
    sio.attach(app)
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    factory = eventloop.loop_factory()  # the loop our server runs on
    web.run_app(make_app(), host="127.0.0.1", port=parser.parse_args().port, print=None, handle_signals=True,
                loop=factory() if factory else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
