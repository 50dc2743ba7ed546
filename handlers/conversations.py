"""REST API for friends, groups, history and receipts: parse, call one domain method, encode."""

from __future__ import annotations

from handlers.base import ApiHandler
from im.protocol import (
    parse_read,
    read_group_id,
    read_int,
    read_str,
    read_user_id,
    read_user_list,
)

__all__ = [
    "ConversationsHandler",
    "FriendAcceptHandler",
    "FriendDeclineHandler",
    "FriendHandler",
    "FriendsHandler",
    "GroupAdminHandler",
    "GroupHandler",
    "GroupLeaveHandler",
    "GroupMemberHandler",
    "GroupMembersHandler",
    "GroupsHandler",
    "HistoryHandler",
    "ReadReceiptsHandler",
    "ReceiptSummaryHandler",
]

MAX_GROUP_NAME_CHARS = 100
DEFAULT_HISTORY_LIMIT = 50
DEFAULT_CONVERSATIONS_LIMIT = 50
MAX_CONVERSATIONS_LIMIT = 100
# A listing cursor: a message id, '.', and a conversation id (at most a group's or a pair's).
MAX_CURSOR_CHARS = 24 + 1 + 70


def _user(value: str) -> str:
    return read_user_id({"user": value}, "user")


def _group(value: str) -> str:
    return read_group_id({"group": value}, "group")


class FriendsHandler(ApiHandler):
    async def get(self) -> None:
        """``{friends: [{user, state: friends|incoming|outgoing, since}]}``."""
        relations = await self.service.friends(self.principal.user)
        self.reply({"friends": [r.to_dict() for r in relations]})

    async def post(self) -> None:
        """Send a friend request (accepting a crossing request from the same user)."""
        principal = self.principal
        other = read_user_id(self.json_body(), "user")
        relation = await self.service.request_friend(principal.user, other)
        self.reply(relation.to_dict(), status=201)


class FriendHandler(ApiHandler):
    async def delete(self, user: str) -> None:
        """Unfriend, or withdraw/refuse a pending request."""
        principal = self.principal
        await self.service.remove_friend(principal.user, _user(user))
        self.set_status(204)
        self.finish()


class FriendAcceptHandler(ApiHandler):
    async def post(self, user: str) -> None:
        principal = self.principal
        relation = await self.service.accept_friend(principal.user, _user(user))
        self.reply(relation.to_dict())


class FriendDeclineHandler(ApiHandler):
    async def post(self, user: str) -> None:
        principal = self.principal
        await self.service.decline_friend(principal.user, _user(user))
        self.set_status(204)
        self.finish()


class GroupsHandler(ApiHandler):
    async def get(self) -> None:
        """The caller's groups (without member lists)."""
        groups = await self.service.groups_of(self.principal.user)
        self.reply({"groups": [g.to_dict(with_members=False) for g in groups]})

    async def post(self) -> None:
        """Create a group owned by the caller: ``{name, members?}``."""
        principal = self.principal
        body = self.json_body()
        name = read_str(body, "name", max_chars=MAX_GROUP_NAME_CHARS)
        members = read_user_list(body, "members", allow_empty=True) if "members" in body else []
        group = await self.service.create_group(principal.user, name, members)
        self.reply(group.to_dict(), status=201)


class GroupHandler(ApiHandler):
    async def get(self, group_id: str) -> None:
        principal = self.principal
        group = await self.service.group(principal.user, _group(group_id))
        self.reply(group.to_dict())

    async def patch(self, group_id: str) -> None:
        """Rename: ``{name}`` (owner or admins)."""
        principal = self.principal
        name = read_str(self.json_body(), "name", max_chars=MAX_GROUP_NAME_CHARS)
        group = await self.service.rename_group(principal.user, _group(group_id), name)
        self.reply(group.to_dict())


class GroupMembersHandler(ApiHandler):
    async def get(self, group_id: str) -> None:
        principal = self.principal
        group = await self.service.group(principal.user, _group(group_id))
        self.reply({"group": group.id, "owner": group.owner, "admins": group.admins,
                    "members": group.members})

    async def post(self, group_id: str) -> None:
        """Add ``{members: [...]}`` (owner or admins; the member cap applies)."""
        principal = self.principal
        members = read_user_list(self.json_body(), "members")
        group = await self.service.add_members(principal.user, _group(group_id), members)
        self.reply(group.to_dict())


class GroupMemberHandler(ApiHandler):
    async def delete(self, group_id: str, user: str) -> None:
        """Remove a member (owner or admins); removing oneself is leaving."""
        principal = self.principal
        await self.service.remove_member(principal.user, _group(group_id), _user(user))
        self.set_status(204)
        self.finish()


class GroupLeaveHandler(ApiHandler):
    async def post(self, group_id: str) -> None:
        principal = self.principal
        await self.service.remove_member(principal.user, _group(group_id), principal.user)
        self.set_status(204)
        self.finish()


class GroupAdminHandler(ApiHandler):
    async def put(self, group_id: str, user: str) -> None:
        principal = self.principal
        group = await self.service.set_admin(principal.user, _group(group_id), _user(user), admin=True)
        self.reply(group.to_dict())

    async def delete(self, group_id: str, user: str) -> None:
        principal = self.principal
        group = await self.service.set_admin(principal.user, _group(group_id), _user(user), admin=False)
        self.reply(group.to_dict())


class ConversationsHandler(ApiHandler):
    async def get(self) -> None:
        """``?before=<cursor>&limit=N``: the caller's conversations, newest activity first."""
        principal = self.principal
        query = self.query()
        limit = read_int(query, "limit", default=DEFAULT_CONVERSATIONS_LIMIT, minimum=1,
                         maximum=MAX_CONVERSATIONS_LIMIT)
        before = read_str(query, "before", max_chars=MAX_CURSOR_CHARS, default="") or None
        self.reply(await self.service.conversations(principal.user, before=before, limit=limit))


class HistoryHandler(ApiHandler):
    async def get(self, conv: str) -> None:
        """``?before=<msg_id>&limit=N``: the archive newest first, for the conversation's participants."""
        principal = self.principal
        query = self.query()
        limit = read_int(query, "limit", default=min(DEFAULT_HISTORY_LIMIT, self.settings_.history_max_limit),
                         minimum=1, maximum=self.settings_.history_max_limit)
        before = read_str(query, "before", max_chars=24, default="") or None
        page = await self.service.history(principal.user, conv, before=before, limit=limit)
        self.reply(page)


class ReadReceiptsHandler(ApiHandler):
    async def post(self) -> None:
        """``{msg_ids: [...]}``: the caller has read these; their senders get read receipts."""
        principal = self.principal
        accepted = await self.service.read(principal, parse_read(self.json_body()))
        self.reply({"msg_ids": accepted})


class ReceiptSummaryHandler(ApiHandler):
    async def get(self, msg_id: str) -> None:
        """``{msg_id, recipients, delivered: {count, users}, read: {count, users}}``."""
        principal = self.principal
        summary = await self.service.receipt_summary(principal.user, msg_id)
        self.reply(summary)
