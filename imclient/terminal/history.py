"""A conversation's recent messages, read from the server's archive.

``GET /api/v1/conversations/{conv}/messages`` serves the archive newest first; trimming inboxes never
touches it, so a conversation entered after a restart (or on a new device) still shows what was said.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from imclient.errors import ApiError

if TYPE_CHECKING:
    from imclient.client import Client

__all__ = ["recent_messages"]


async def recent_messages(client: Client, conv: str, limit: int) -> list[dict[str, Any]] | None:
    """Up to ``limit`` newest messages of ``conv``, oldest first; None when the server has no history
    API. A conversation that is not the user's (an unknown group) has no messages to show."""
    path = f"/api/v1/conversations/{quote(conv, safe=':')}/messages"
    try:
        reply = await client.request("GET", path, query={"limit": limit})
    except ApiError as error:
        if error.code == "unknown_conversation":
            return []
        if error.status in (404, 405):
            return None
        raise
    messages = reply.get("messages", []) if isinstance(reply, dict) else []
    return list(reversed(messages))
