"""Sends that survive timeouts, overload and reconnects: retried with one ``client_msg_id`` until a receipt.

The server stores a ``client_msg_id`` once per sender and answers a retry with the original receipt, so a
send whose answer was lost can be sent again without becoming two messages.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from imclient import keepalive
from imclient.backoff import backoff_delay
from imclient.errors import ApiError, ClientClosed, ConnectionFailed, SendFailed
from imclient.policy import CALL_TIMEOUT_SECS, RELOGIN_CODES, retryable
from imclient.ws_session import WsSession

if TYPE_CHECKING:
    from imclient.client import Client

__all__ = ["Sender"]

# Every part of the client logs under one name, so configuring that logger configures the client.
log = logging.getLogger("imclient.client")


class Sender:
    """Sends on the open WebSocket when there is one, else as a REST POST on a kept-alive connection.

    The WebSocket is preferred because its receipt also delivers the entry to the sender's own inbox
    cursor (no pull round trip). A REST attempt that could not reach its node moves to the next node;
    while a WebSocket is open, the connection loop owns the choice of node.
    """

    def __init__(self, client: Client, ws: WsSession, sends: keepalive.KeepAlivePool) -> None:
        self._client = client
        self._ws = ws
        self._sends = sends

    async def send(self, fields: dict[str, Any], client_msg_id: str | None,
                   deadline_secs: float) -> dict[str, Any]:
        """Send ``fields`` (recipient and body) until a receipt, a final error or ``deadline_secs``."""
        client = self._client
        cmid = client_msg_id or uuid.uuid4().hex
        payload = {**fields, "client_msg_id": cmid}
        deadline = time.monotonic() + deadline_secs
        for attempt in itertools.count():
            if client._closing:
                raise ClientClosed("client closed while sending")
            timeout = min(CALL_TIMEOUT_SECS, max(0.1, deadline - time.monotonic()))
            try:
                ws = self._ws.current
                if ws is not None and not ws.closed:
                    reply = await ws.call({"t": "send", **payload}, timeout)
                    reply.pop("t", None)
                    reply.pop("rid", None)
                    await client._own_sent(reply, payload)
                    return reply
                # Safe to send twice (it carries its client_msg_id): a keep-alive connection may be used.
                return await self._sends.call_json("POST", client.base_url, "/api/v1/messages", body=payload,
                                                   token=await client._token(), timeout_secs=timeout)
            except ApiError as error:
                if error.code in RELOGIN_CODES:
                    client.token = None
                elif not retryable(error):
                    raise
                wait = error.retry_after_secs or backoff_delay(attempt, rand=client._rand)
                reason: Exception = error
            except ConnectionFailed as error:
                if self._ws.current is None:  # REST to this node failed: the next attempt tries another
                    client._rotate()
                wait, reason = backoff_delay(attempt, rand=client._rand), error
            if time.monotonic() + wait >= deadline:
                raise SendFailed(f"send not confirmed in {deadline_secs:.0f} s: {reason}", cmid)
            log.info("%s: send %s not confirmed (%s); retrying in %.2f s", client.user, cmid, reason, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")
