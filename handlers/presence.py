"""Presence API: who is online across the cluster (``GET /api/v1/presence``, ``/api/v1/presence/{user}``).

Any authenticated caller may ask. An unknown user id answers "offline" like a known one, so the call
does not reveal which accounts exist.
"""

from __future__ import annotations

from urllib.parse import unquote

from handlers.base import ApiHandler
from im.protocol import read_int, read_user_id

__all__ = ["PresenceListHandler", "PresenceUserHandler"]

DEFAULT_PAGE_USERS = 100
MAX_PAGE_USERS = 1000


class PresenceListHandler(ApiHandler):
    """``GET /api/v1/presence?after=U&limit=N``: online users by id; ``next`` is the following ``after``."""

    async def get(self) -> None:
        _ = self.principal
        query = self.query()
        after = read_user_id(query, "after") if query.get("after") else ""
        limit = read_int(query, "limit", default=DEFAULT_PAGE_USERS, minimum=1, maximum=MAX_PAGE_USERS)
        page = await self.service.online_users(after=after, limit=limit)
        self.reply(page.to_dict())


class PresenceUserHandler(ApiHandler):
    """``GET /api/v1/presence/{user}``: ``{user, online, connections, nodes}``."""

    async def get(self, user: str) -> None:
        _ = self.principal
        user = read_user_id({"user": unquote(user)}, "user")
        info = await self.service.presence_of(user)
        self.reply(info.to_dict())
