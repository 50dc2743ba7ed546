"""The device's place in its inbox: every entry reaches ``on_message`` once, in seq order.

Both transports feed pull (or poll) replies here, and a WebSocket send feeds its own entry from the
receipt. The cursor only moves forward, except on a ``gap`` or a new inbox ``epoch``: then the entries it
stood on are gone, so it restarts where the server serves from and tells ``on_gap``. Given a place file,
the cursor starts from the place saved there and saves every move, so the next run resumes it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from imclient.state import InboxPlace, InboxPlaceFile

__all__ = ["GapCallback", "InboxCursor", "MessageCallback"]

# Every part of the client logs under one name, so configuring that logger configures the client.
log = logging.getLogger("imclient.client")

MessageCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
GapCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


class InboxCursor:
    """``last_seq`` and the delivery of what follows it.

    One delivery runs at a time (pull replies, own sends): ``on_message`` awaits in between, and two
    interleaved deliveries would hand entries over out of seq order.
    """

    def __init__(self, user: str, after: int, wake: asyncio.Event, *,
                 on_message: MessageCallback | None, on_gap: GapCallback | None,
                 place_file: InboxPlaceFile | None = None) -> None:
        self.user = user
        saved = place_file.load() if place_file is not None else None
        self.last_seq = saved.last_seq if saved is not None else after
        self.epoch: str | None = saved.epoch if saved is not None else None
        self._place_file = place_file
        # What the place file holds, so an unchanged place is not written again.
        self._saved_place = saved
        self.duplicates_dropped = 0
        self.on_message = on_message
        self.on_gap = on_gap
        self._wake = wake  # set to ask the transport for a pull
        self._delivering = asyncio.Lock()

    async def absorb(self, reply: dict[str, Any]) -> bool:
        """Hand the new entries of one pull reply to ``on_message`` in seq order; False if the reply
        asks for nothing more (an empty page)."""
        async with self._delivering:
            try:
                return await self._absorb_reply(reply)
            finally:
                self._save_place()

    async def take_own_send(self, receipt: dict[str, Any], payload: dict[str, Any]) -> bool:
        """Deliver our own send from its receipt; True if delivered (the caller then acks it).

        The WebSocket is not notified of our own sends (``echo=0``), so the entry is taken from the
        receipt when it directly follows the last seq held: no pull round trip. Otherwise something else
        came in between, so a pull is asked for (it fetches both, in order). While a delivery is under
        way (this send may come from inside ``on_message``) the entry is left to the pull as well:
        waiting for that delivery to end would wait for ourselves.
        """
        seq = receipt.get("sender_seq")
        if not isinstance(seq, int) or seq <= self.last_seq:
            return False
        if self._delivering.locked() or seq != self.last_seq + 1 or receipt.get("duplicate"):
            self._wake.set()
            return False
        async with self._delivering:  # free, so taken at once: nothing runs between the check and here
            self.last_seq = seq
            await self._call(self.on_message, {
                "seq": seq, "msg_id": receipt.get("msg_id"), "conv": receipt.get("conv"), "from": self.user,
                "to": receipt.get("to"), "kind": "text", "body": payload.get("body"),
                "client_msg_id": receipt.get("client_msg_id"), "ts": receipt.get("ts"),
            })
            self._save_place()
        return True

    def _save_place(self) -> None:
        """Save the place if it moved. Runs before the delivered entries are acknowledged, so the
        saved place is never below the server's floor for this device: the next run has no gap."""
        if self._place_file is None:
            return
        place = InboxPlace(self.last_seq, self.epoch)
        if place != self._saved_place:
            self._place_file.save(place)
            self._saved_place = place

    async def _absorb_reply(self, reply: dict[str, Any]) -> bool:
        epoch = reply.get("epoch")
        messages = reply.get("messages") or []
        if reply.get("gap") or (self.epoch is not None and epoch != self.epoch):
            await self._gap(reply, messages)
        self.epoch = epoch
        for message in messages:
            seq = message.get("seq")
            if not isinstance(seq, int) or seq <= self.last_seq:
                self.duplicates_dropped += 1
                continue
            self.last_seq = seq
            await self._call(self.on_message, message)
        nxt = reply.get("next")
        if isinstance(nxt, int) and nxt > self.last_seq:
            self.last_seq = nxt
        return bool(messages) or bool(reply.get("more"))

    async def _gap(self, reply: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        """The cursor cannot continue: restart it where the server serves from, and tell the app."""
        if reply.get("gap"):
            first = messages[0]["seq"] - 1 if messages else reply.get("next", 0)
        else:
            # A new epoch served "incrementally" from an old cursor: the seqs before it are another
            # inbox's. Start over from the beginning of this one.
            first = 0
            messages.clear()
            reply["more"] = True
        # A warning only when no on_gap callback takes it: an application that is told decides what
        # its user sees.
        level = logging.INFO if self.on_gap is not None else logging.WARNING
        log.log(level, "%s: inbox gap (epoch %s -> %s); cursor %d -> %d", self.user, self.epoch,
                reply.get("epoch"), self.last_seq, first)
        self.last_seq = first
        await self._call(self.on_gap, reply)

    async def _call(self, callback: Callable[[dict[str, Any]], Any] | None, arg: dict[str, Any]) -> None:
        """Run an app callback; its exception is logged, not retried (the entry counts as delivered)."""
        if callback is None:
            return
        try:
            result = callback(arg)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("%s: callback failed", self.user)
