"""The Tornado application: routes and transport settings."""

from __future__ import annotations

from pathlib import Path

import tornado.web

from config import Settings
from handlers.api import (
    InboxAckHandler,
    InboxHandler,
    MessagesHandler,
    TokensHandler,
    UserHandler,
    UsersHandler,
)
from handlers.base import NotFoundHandler
from handlers.conversations import (
    ConversationsHandler,
    FriendAcceptHandler,
    FriendDeclineHandler,
    FriendHandler,
    FriendsHandler,
    GroupAdminHandler,
    GroupHandler,
    GroupLeaveHandler,
    GroupMemberHandler,
    GroupMembersHandler,
    GroupsHandler,
    HistoryHandler,
    ReadReceiptsHandler,
    ReceiptSummaryHandler,
)
from handlers.files import FileHandler, FilesHandler
from handlers.health import HealthHandler
from handlers.longpoll import ParkedPolls, PollHandler
from handlers.metrics import MetricsHandler, access_logger
from handlers.openapi import OpenApiHandler
from handlers.presence import PresenceListHandler, PresenceUserHandler
from handlers.ws import ImWebSocket, hard_frame_limit
from im.service import MessagingService

__all__ = ["build_routes", "make_app"]

BUNDLED_STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def make_app(service: MessagingService, settings: Settings) -> tornado.web.Application:
    return tornado.web.Application(
        build_routes(service, settings),
        websocket_ping_interval=settings.ws_ping_interval_secs,
        websocket_ping_timeout=settings.ws_ping_timeout_secs,
        websocket_max_message_size=hard_frame_limit(settings),
        compress_response=False,
        log_function=access_logger(service.metrics),
    )


def build_routes(service: MessagingService, settings: Settings) -> list[tornado.web.URLSpec | tuple]:
    """Every route of the server (the fuzz and contract tests walk this list)."""
    deps = {"service": service, "settings": settings}
    static_dir = settings.static_dir or str(BUNDLED_STATIC_DIR)
    routes: list[tornado.web.URLSpec | tuple] = [
        (r"/api/v1/users", UsersHandler, deps),
        (r"/api/v1/users/([^/]+)", UserHandler, deps),
        (r"/api/v1/tokens", TokensHandler, deps),
        (r"/api/v1/messages", MessagesHandler, deps),
        (r"/api/v1/inbox", InboxHandler, deps),
        (r"/api/v1/inbox/ack", InboxAckHandler, deps),
        (r"/api/v1/poll", PollHandler, {**deps, "parked": ParkedPolls(settings.long_poll_probe_secs)}),
        (r"/api/v1/presence", PresenceListHandler, deps),
        (r"/api/v1/presence/([^/]+)", PresenceUserHandler, deps),
        (r"/api/v1/friends", FriendsHandler, deps),
        (r"/api/v1/friends/([^/]+)", FriendHandler, deps),
        (r"/api/v1/friends/([^/]+)/accept", FriendAcceptHandler, deps),
        (r"/api/v1/friends/([^/]+)/decline", FriendDeclineHandler, deps),
        (r"/api/v1/groups", GroupsHandler, deps),
        (r"/api/v1/groups/([^/]+)", GroupHandler, deps),
        (r"/api/v1/groups/([^/]+)/members", GroupMembersHandler, deps),
        (r"/api/v1/groups/([^/]+)/members/([^/]+)", GroupMemberHandler, deps),
        (r"/api/v1/groups/([^/]+)/leave", GroupLeaveHandler, deps),
        (r"/api/v1/groups/([^/]+)/admins/([^/]+)", GroupAdminHandler, deps),
        (r"/api/v1/conversations", ConversationsHandler, deps),
        (r"/api/v1/conversations/([^/]+)/messages", HistoryHandler, deps),
        (r"/api/v1/messages/([^/]+)/receipts", ReceiptSummaryHandler, deps),
        (r"/api/v1/receipts/read", ReadReceiptsHandler, deps),
        (r"/api/v1/files", FilesHandler, deps),
        (r"/api/v1/files/([^/]+)", FileHandler, deps),
        (r"/ws", ImWebSocket, deps),
        (r"/healthz", HealthHandler, deps),
        (r"/metrics", MetricsHandler, deps),
        (r"/api/v1/openapi.yaml", OpenApiHandler, deps),
        (r"/api/.*", NotFoundHandler, deps),
        (r"/(.*)", tornado.web.StaticFileHandler, {"path": static_dir, "default_filename": "index.html"}),
    ]
    return routes
