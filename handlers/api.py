"""REST API for JWT callers: accounts, tokens, sending, pulling and acknowledging."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from handlers.base import ApiHandler
from handlers.errors import http_status
from im.errors import ImError, InvalidInput, NotFoundError
from im.models import Receipt
from im.protocol import (
    parse_ack,
    parse_pull,
    parse_send,
    parse_send_batch,
    read_device,
    read_str,
    read_user_id,
)

__all__ = ["InboxAckHandler", "InboxHandler", "MessagesHandler", "TokensHandler", "UserHandler",
           "UsersHandler"]

# Messages one batch send may carry (the whole request also stays within IM_MAX_BODY_BYTES).
MAX_SEND_BATCH = 100


class UsersHandler(ApiHandler):
    async def post(self) -> None:
        body = self.json_body()
        user = read_user_id(body, "user")
        await self.service.register(user, read_str(body, "password", max_chars=4096),
                                    client_ip=self.request.remote_ip or "")
        self.reply({"user": user}, status=201)


class UserHandler(ApiHandler):
    """``GET /api/v1/users/{user}``: whether a user id exists, so a client can check a new chat's peer
    before opening it (sends and friend requests already tell an authenticated caller as much)."""

    async def get(self, user: str) -> None:
        _ = self.principal
        user = read_user_id({"user": unquote(user)}, "user")
        if not await self.service.user_exists(user):
            raise NotFoundError(f"user {user!r} does not exist", code="unknown_user", field="user")
        self.reply({"user": user})


class TokensHandler(ApiHandler):
    async def post(self) -> None:
        body = self.json_body()
        user = read_user_id(body, "user")
        device = read_device(body)
        token, expires_at = await self.service.login(
            user, read_str(body, "password", max_chars=4096), device, client_ip=self.request.remote_ip or ""
        )
        self.reply({"token": token, "token_type": "Bearer", "expires_at": expires_at, "user": user,
                    "device": device}, status=201)

    async def delete(self) -> None:
        """Sign out this device (the token's), or every device of the user with ``?devices=all``."""
        principal = self.principal
        scope = self.query().get("devices", "this")
        if scope not in ("this", "all"):
            raise InvalidInput("devices must be 'this' (the default) or 'all'", field="devices")
        await self.service.logout(principal, all_devices=scope == "all")
        if scope == "all":
            self.reply({"signed_out": "all", "user": principal.user})
        else:
            self.reply({"signed_out": "device", "device": principal.device, "user": principal.user})


class MessagesHandler(ApiHandler):
    async def post(self) -> None:
        """One message, or with ``{"messages": [...]}`` a batch: each item's receipt or error, in order."""
        principal = self.principal
        body = self.json_body()
        if "messages" in body:
            requests = parse_send_batch(body, max_items=MAX_SEND_BATCH,
                                        max_text_chars=self.settings_.max_text_chars)
            outcomes = await self.service.send_many(principal, requests)
            self.reply({"results": [_outcome(o, principal.user) for o in outcomes]})
            return
        request = parse_send(body, max_text_chars=self.settings_.max_text_chars)
        receipt = await self.service.send(principal, request)
        self.reply(receipt.to_dict(sender=principal.user), status=200 if receipt.duplicate else 201)


def _outcome(outcome: Receipt | ImError, sender: str) -> dict[str, Any]:
    """A batch item's answer, with the status the same send alone would have got."""
    if isinstance(outcome, ImError):
        return {"status": http_status(outcome), "error": outcome.to_dict()}
    return {"status": 200 if outcome.duplicate else 201, "receipt": outcome.to_dict(sender=sender)}


class InboxHandler(ApiHandler):
    async def get(self) -> None:
        principal = self.principal
        after, limit = parse_pull(self.query(), default_limit=self.settings_.pull_default_limit,
                                  max_limit=self.settings_.pull_max_limit)
        result = await self.service.pull(principal, after=after, limit=limit)
        self.reply(result.to_dict())


class InboxAckHandler(ApiHandler):
    async def post(self) -> None:
        principal = self.principal
        result = await self.service.ack(principal, upto=parse_ack(self.json_body()))
        self.reply(result.to_dict())
