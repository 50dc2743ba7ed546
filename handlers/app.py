"""The Tornado application: routes and transport settings."""

from __future__ import annotations

from pathlib import Path

import tornado.web

from config import Settings
from handlers.api import InboxAckHandler, InboxHandler, MessagesHandler, TokensHandler, UsersHandler
from handlers.base import NotFoundHandler
from handlers.health import HealthHandler
from handlers.longpoll import PollHandler
from handlers.ws import ImWebSocket, hard_frame_limit
from im.service import MessagingService

__all__ = ["make_app"]

BUNDLED_STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def make_app(service: MessagingService, settings: Settings) -> tornado.web.Application:
    deps = {"service": service, "settings": settings}
    static_dir = settings.static_dir or str(BUNDLED_STATIC_DIR)
    routes: list[tornado.web.URLSpec | tuple] = [
        (r"/api/v1/users", UsersHandler, deps),
        (r"/api/v1/tokens", TokensHandler, deps),
        (r"/api/v1/messages", MessagesHandler, deps),
        (r"/api/v1/inbox", InboxHandler, deps),
        (r"/api/v1/inbox/ack", InboxAckHandler, deps),
        (r"/api/v1/poll", PollHandler, deps),
        (r"/ws", ImWebSocket, deps),
        (r"/healthz", HealthHandler, deps),
        (r"/api/.*", NotFoundHandler, deps),
        (r"/(.*)", tornado.web.StaticFileHandler, {"path": static_dir, "default_filename": "index.html"}),
    ]
    return tornado.web.Application(
        routes,
        websocket_ping_interval=settings.ws_ping_interval_secs,
        websocket_ping_timeout=settings.ws_ping_timeout_secs,
        websocket_max_message_size=hard_frame_limit(settings),
        compress_response=False,
    )
