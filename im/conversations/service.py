"""Use cases around conversations: friends, groups, files, history, receipt queries and send rules.

What writes messages (sends, receipts) is the delivery core's, on the one group-commit path; this
answers who may talk to whom, resolves a send's target into recipients, and serves the reads.
Transports reach it through ``im/service.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from im.accounts.users import UserStore
from im.conversations.crypto import KeyRing
from im.conversations.directory import Directory
from im.conversations.files import FileInfo, FileStore, Upload, clean_content_type
from im.conversations.friends import DIRECT_POLICIES, FriendStore, Relation
from im.conversations.groups import Group, GroupStore
from im.conversations.history import HistoryReader
from im.conversations.listing import ConversationList
from im.conversations.read_markers import ReadMarkers
from im.conversations.receipts import (
    DELIVERED,
    READ,
    ReceiptStore,
    is_group_conversation,
    parse_msg_id,
    summary_dict,
)
from im.errors import ForbiddenError, InvalidInput, NotFoundError
from im.models import direct_conversation_id
from im.storage.store import Store

__all__ = ["Conversations", "Target"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a message goes: its conversation, the archive's ``to`` and the inboxes that get an entry."""

    conv: str
    to: str
    recipients: tuple[str, ...]


class Conversations:
    def __init__(self, store: Store, users: UserStore, *, keys: KeyRing | None, direct_policy: str,
                 max_group_members: int, file_max_bytes: int) -> None:
        if direct_policy not in DIRECT_POLICIES:
            raise ValueError(f"direct_policy must be one of {DIRECT_POLICIES}")
        self.users = users
        self.keys = keys
        self.direct_policy = direct_policy
        db = store.db
        self.friends = FriendStore(db["relations"])
        self.groups = GroupStore(db["groups"], max_members=max_group_members)
        self.receipts = ReceiptStore(db["receipts"], store.messages)
        self.files = FileStore(db, cipher=keys, max_bytes=file_max_bytes)
        self.history_reader = HistoryReader(store.messages, cipher=keys)
        self.directory = Directory(db["conversations"])
        self.markers = ReadMarkers(db["read_markers"])
        self.listing = ConversationList(self.groups, self.directory, self.markers, self.history_reader,
                                        store.messages)

    async def start(self) -> None:
        await self.friends.ensure_indexes()
        await self.groups.ensure_indexes()
        await self.directory.ensure_indexes()
        if self.keys is not None:
            await self.keys.check()

    # -- who may talk to whom -------------------------------------------------------------------------

    async def direct_target(self, sender: str, to: str) -> Target:
        """A one-to-one conversation: the recipient must exist and, under ``friends``, be a friend."""
        if to != sender and not await self.users.exists(to):
            raise NotFoundError(f"recipient {to!r} does not exist", code="unknown_recipient", field="to")
        if self.direct_policy == "friends" and not await self.friends.are_friends(sender, to):
            raise ForbiddenError(f"you and {to!r} are not friends (this server only lets friends talk)",
                                 code="not_friends", field="to")
        return _direct(sender, to)

    async def listed(self, target: Target) -> None:
        """Once a send is accepted, before it is written: its one-to-one pair is in the directory, so
        the conversation is listed (a refused send registers nothing)."""
        if not is_group_conversation(target.conv):
            await self.directory.register(target.conv, target.recipients)

    def direct_target_known(self, sender: str, to: str) -> Target | None:
        """:meth:`direct_target` when everything it checks is in memory (anyone may message anyone, the
        recipient is a user seen before, and the pair is registered); None means "await
        :meth:`direct_target`"."""
        if self.direct_policy != "anyone" or (to != sender and not self.users.known(to)):
            return None
        target = _direct(sender, to)
        return target if self.directory.known(target.conv) else None

    async def group_target(self, sender: str, group_id: str) -> Target:
        """A group conversation: the sender must be a member; every member (sender too) gets an entry."""
        group = await self.groups.of_member(group_id, sender)
        return Target(conv=group.conv, to=group.conv, recipients=tuple(group.members))

    async def is_participant(self, user: str, conv: str) -> bool:
        kind, _, rest = conv.partition(":")
        if kind == "d":
            return user in rest.split(":")
        if kind == "g":
            group = await self.groups.get(rest)
            return group is not None and user in group.members
        return False

    async def _require_participant(self, user: str, conv: str) -> None:
        if not await self.is_participant(user, conv):
            raise NotFoundError(f"no conversation {conv!r} among yours", code="unknown_conversation",
                                field="conv")

    # -- friends --------------------------------------------------------------------------------------

    async def request_friend(self, me: str, other: str) -> Relation:
        if not await self.users.exists(other):
            raise NotFoundError(f"user {other!r} does not exist", code="unknown_user", field="user")
        return await self.friends.request(me, other)

    # -- groups ---------------------------------------------------------------------------------------

    async def _existing(self, users: Iterable[str]) -> list[str]:
        users = list(dict.fromkeys(users))
        for user in users:
            if not await self.users.exists(user):
                raise NotFoundError(f"user {user!r} does not exist", code="unknown_user", field="members")
        return users

    async def create_group(self, owner: str, name: str, members: Iterable[str]) -> Group:
        return await self.groups.create(owner, name, await self._existing(members))

    async def add_members(self, actor: str, group_id: str, members: Iterable[str]) -> Group:
        return await self.groups.add_members(actor, group_id, await self._existing(members))

    # -- files ----------------------------------------------------------------------------------------

    async def start_upload(self, owner: str, *, to: str = "", group: str = "", name: str = "",
                           content_type: str | None = None) -> Upload:
        """Open an upload for the conversation with ``to`` or of ``group`` (exactly one of them)."""
        target = await self.target(owner, to=to, group=group)
        return await self.files.start_upload(owner, target.conv, name=name,
                                             content_type=clean_content_type(content_type))

    async def target(self, sender: str, *, to: str = "", group: str = "") -> Target:
        if bool(to) == bool(group):
            raise InvalidInput("name exactly one of 'to' (a user) or 'group'", field="to")
        return await (self.group_target(sender, group) if group else self.direct_target(sender, to))

    async def attachment(self, sender: str, conv: str, file_id: str) -> dict[str, Any]:
        """The body of a ``file`` message: the file must be the sender's, uploaded for this conversation.

        A missing file gets the same error as another's, so senders cannot probe which file ids exist.
        """
        refused = NotFoundError(f"no file {file_id!r} of yours in this conversation", code="unknown_file",
                                field="body")
        try:
            info = await self.files.info(file_id)
        except NotFoundError:
            raise refused from None
        if info.owner != sender or info.conv != conv:
            raise refused
        return info.attachment()

    async def download(self, user: str, file_id: str) -> tuple[FileInfo, AsyncIterator[bytes]]:
        """The file and its content stream, for its uploader and the conversation's participants only."""
        info = await self.files.info(file_id)
        if info.owner != user and not await self.is_participant(user, info.conv):
            raise NotFoundError(f"no file {file_id!r}", code="unknown_file")
        return info, self.files.stream(info)

    # -- reads ----------------------------------------------------------------------------------------

    async def history(self, user: str, conv: str, *, before: str | None, limit: int) -> dict[str, Any]:
        await self._require_participant(user, conv)
        before_id: ObjectId | None = parse_msg_id(before, "before") if before else None
        return await self.history_reader.page(conv, before=before_id, limit=limit)

    async def conversations(self, user: str, *, before: str | None, limit: int) -> dict[str, Any]:
        return await self.listing.page(user, before=before, limit=limit)

    async def receipt_summary(self, user: str, msg_id: str, *,
                              floor_of: Callable[[str], Awaitable[int]]) -> dict[str, Any]:
        """Who a message was delivered to and who read it, for the conversation's participants
        (``floor_of``: an inbox's trimmed floor, as the delivery core reads it)."""
        found = await self.receipts.summary(parse_msg_id(msg_id))
        if found is None or not await self.is_participant(user, found[0]["conv"]):
            raise NotFoundError(f"no message {msg_id!r}", code="unknown_message", field="msg_id")
        message, aggregate = found
        if not is_group_conversation(message["conv"]):
            aggregate = await self._direct_receipts(message, floor_of)
        return summary_dict(message, aggregate)

    async def _direct_receipts(self, message: dict[str, Any],
                               floor_of: Callable[[str], Awaitable[int]]) -> dict[str, Any]:
        """A one-to-one message's receipts, from its peer's read marker and inbox floor: a delivered
        receipt is written when the peer's inbox is trimmed past the message, so "trimmed past" and
        "delivered" agree; read implies delivered."""
        peer = next((r for r in message.get("rcpt", []) if r["u"] != message["from"]), None)
        if peer is None:
            return {}  # one's notes to oneself
        marker = (await self.markers.of([(peer["u"], message["conv"])])).get((peer["u"], message["conv"]))
        read = marker is not None and marker >= message["_id"]
        if read:
            return {DELIVERED: [peer["u"]], READ: [peer["u"]]}
        delivered = await floor_of(peer["u"]) >= peer["s"]
        return {DELIVERED: [peer["u"]]} if delivered else {}


def _direct(sender: str, to: str) -> Target:
    recipients = (sender,) if to == sender else (to, sender)
    return Target(conv=direct_conversation_id(sender, to), to=to, recipients=recipients)
