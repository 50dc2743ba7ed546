"""The long-poll transport: each poll is a pull that waits, and its ``after`` acks the one before.

Used when the WebSocket upgrade fails (a proxy that refuses it) or when asked for. A poll answer is its
own notify, so there is no separate wake-up: the loop polls again as soon as an answer is delivered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from imclient import keepalive
from imclient.cursor import InboxCursor
from imclient.errors import ApiError
from imclient.policy import RELOGIN_CODES, Kicked, Relogin

if TYPE_CHECKING:
    from imclient.client import Client

__all__ = ["LongPollSession"]

# Extra time on top of the poll wait before the client gives up on an answer.
POLL_GRACE_SECS = 10.0


class LongPollSession:
    """Polls one node on a kept-alive connection (``poll``) until a poll fails or the WebSocket is due.

    Settings (``poll_timeout_secs``, ``pull_limit``, ``on_notify``) are read from the client on every
    poll: they are public attributes an application may change.
    """

    def __init__(self, client: Client, cursor: InboxCursor, *, poll: keepalive.KeepAliveConnection,
                 sends: keepalive.KeepAlivePool) -> None:
        self._client = client
        self._cursor = cursor
        self._poll = poll
        self._sends = sends

    async def serve(self, ws_due: Callable[[], bool]) -> bool:
        """Poll until a poll fails (raises), the client closes, or ``ws_due()`` says the WebSocket is
        worth another try; return whether any poll was answered."""
        client = self._client
        worked = False
        while not client._closing:
            if worked and ws_due():
                # The WebSocket is tried next: no idle connection left behind.
                self._poll.close()
                self._sends.close()
                return True
            # The first poll does not wait: it is the pull-on-connect, and it proves the node answers.
            wait_secs = client.poll_timeout_secs if worked else 0
            try:
                reply = await self._poll.get_json(
                    client.base_url, "/api/v1/poll", token=await client._token(),
                    query={"after": self._cursor.last_seq, "timeout": wait_secs, "limit": client.pull_limit},
                    timeout_secs=wait_secs + POLL_GRACE_SECS,
                )
            except ApiError as error:
                if error.code in RELOGIN_CODES:
                    raise Relogin(error.message) from None
                if error.code == "kicked":
                    raise Kicked(error.message) from None
                raise
            if not worked:
                worked = True
                client._set_connected("longpoll")
            if client.on_notify is not None and isinstance(reply, dict) and reply.get("messages"):
                seqs = [m.get("seq") for m in reply["messages"]]
                client.on_notify(max((q for q in seqs if isinstance(q, int)), default=0), "longpoll")
            await self._cursor.absorb(reply)  # the next poll's `after` acknowledges what was delivered
        return worked

