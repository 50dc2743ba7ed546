"""The connection loop: keep one transport up until the client closes or is told to stop.

Each round logs in if needed, tries the WebSocket (unless long-poll is forced, or the upgrade failed
recently) and serves it, else serves long-poll. A round that ends with an error moves to the next node
after a jittered, capped backoff; the backoff starts over after any round that got through, so the
first failure after a working connection is retried quickly, however many failures came before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from imclient.backoff import backoff_delay
from imclient.errors import ApiError, ConnectionFailed
from imclient.longpoll import LongPollSession
from imclient.policy import Kicked, Relogin
from imclient.ws_session import WsSession

if TYPE_CHECKING:
    from imclient.client import Client

__all__ = ["ConnectionLoop"]

# Every part of the client logs under one name, so configuring that logger configures the client.
log = logging.getLogger("imclient.client")

# After a failed WebSocket upgrade, stay on long-poll this long before trying the upgrade again.
WS_RETRY_AFTER_SECS = 60.0


class ConnectionLoop:
    """Chooses the transport for each round and decides, from how the round ended, what comes next:
    reconnect (with backoff, on the next node), log in again (refused token), or stop for good (a newer
    session took over, or the credentials are refused)."""

    def __init__(self, client: Client, ws: WsSession, long_poll: LongPollSession) -> None:
        self._client = client
        self._ws = ws
        self._long_poll = long_poll
        # Until this time.monotonic() value, auto mode stays on long-poll (the upgrade failed).
        self._ws_retry_at = 0.0

    async def run(self) -> None:
        """Connect, serve, reconnect, until the client closes or must stop."""
        client = self._client
        attempt = 0
        while not client._closing:
            long_poll_worked = False
            try:
                await client._token()
                if self._ws_allowed():
                    ws = await self._ws.open()
                    if ws is not None:
                        await self._ws.serve(ws)
                        raise ConnectionFailed("WebSocket closed")
                    self._ws_retry_at = time.monotonic() + WS_RETRY_AFTER_SECS
                long_poll_worked = await self._long_poll.serve(self._ws_due)
                if long_poll_worked:
                    continue  # leaving long-poll to try the WebSocket again
                raise ConnectionFailed("long-poll failed")
            except Kicked:
                client.stopped_reason = "kicked"
                log.warning("%s/%s: kicked by a newer session; not reconnecting", client.user, client.device)
                break
            except Relogin:
                client.token = None
                continue
            except ApiError as error:
                if error.code == "bad_credentials":
                    client.stopped_reason = "bad_credentials"
                    log.error("%s: credentials refused; stopping", client.user)
                    break
                reason: Exception = error
            except (ConnectionFailed, OSError) as error:
                reason = error
            except Exception as error:  # a bug must not end the client silently
                log.exception("%s: connection loop failed", client.user)
                reason = error
            finally:
                if client.connected_via is not None:
                    # This round got through (a socket, or at least one poll): the next failure backs
                    # off from scratch, however many failures came before it.
                    attempt = 0
                client._set_disconnected()
            if client._closing:
                break
            if not long_poll_worked:
                self._ws_retry_at = 0.0  # the node is down, not the upgrade: try WebSocket first next time
            client._rotate()
            delay = backoff_delay(attempt, rand=client._rand)
            attempt += 1
            client.reconnects += 1
            log.info("%s: disconnected (%s); reconnecting to %s in %.2f s", client.user, reason,
                     client.base_url, delay)
            await asyncio.sleep(delay)
        client._set_disconnected()

    def _ws_allowed(self) -> bool:
        """Whether this round tries the WebSocket first."""
        transport = self._client.transport
        if transport == "longpoll":
            return False
        return transport == "ws" or time.monotonic() >= self._ws_retry_at

    def _ws_due(self) -> bool:
        """Whether a working long-poll should make way for another WebSocket try (auto mode only)."""
        return self._client.transport == "auto" and time.monotonic() >= self._ws_retry_at
