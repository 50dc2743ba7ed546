"""Groups: membership and roles. Sending to a group is the ordinary write path (see ``im/service.py``).

A group document holds its member list (capped, so a message's write fan-out stays bounded), its
owner and admins. Membership changes are optimistic: each update is conditioned on the ``version``
read, and retried on a clash, so two admins adding members at once can never push a group past the
cap or lose each other's change.

A caller who is not a member gets the same 404 as for a missing group: group ids are not revealed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from im.errors import ConflictError, ForbiddenError, InvalidInput, NotFoundError
from im.storage.store import store_errors, utcnow

__all__ = ["Group", "GroupStore", "group_conversation_id", "new_group_id"]

# Optimistic updates retried this many times before the caller is told to try again.
MAX_UPDATE_ROUNDS = 10
# Most groups one "my groups" call returns.
MAX_LISTED_GROUPS = 1000


def new_group_id() -> str:
    return secrets.token_hex(8)


def group_conversation_id(group_id: str) -> str:
    return f"g:{group_id}"


@dataclass(slots=True)
class Group:
    id: str
    name: str
    owner: str
    admins: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    version: int = 0
    created_at: datetime | None = None

    @property
    def conv(self) -> str:
        return group_conversation_id(self.id)

    def can_manage(self, user: str) -> bool:
        return user == self.owner or user in self.admins

    def to_dict(self, *, with_members: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"group": self.id, "conv": self.conv, "name": self.name, "owner": self.owner,
                               "admins": self.admins, "member_count": len(self.members)}
        if with_members:
            out["members"] = self.members
        return out

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Group:
        return cls(id=doc["_id"], name=doc["name"], owner=doc["owner"], admins=list(doc.get("admins", [])),
                   members=list(doc["members"]), version=doc.get("version", 0),
                   created_at=doc.get("created_at"))


class GroupStore:
    def __init__(self, groups: AsyncCollection[dict[str, Any]], *, max_members: int) -> None:
        self._groups = groups
        self.max_members = max_members

    async def ensure_indexes(self) -> None:
        async with store_errors("creating group indexes"):
            await self._groups.create_index([("members", ASCENDING)])

    # -- reads ----------------------------------------------------------------------------------------

    async def get(self, group_id: str) -> Group | None:
        async with store_errors("reading a group"):
            doc = await self._groups.find_one({"_id": group_id})
        return None if doc is None else Group.from_doc(doc)

    async def of_member(self, group_id: str, user: str) -> Group:
        """The group, if ``user`` is a member; else the same 404 as for a group that does not exist."""
        group = await self.get(group_id)
        if group is None or user not in group.members:
            raise NotFoundError(f"no group {group_id!r} among yours", code="unknown_group", field="group")
        return group

    async def of_user(self, user: str) -> list[Group]:
        async with store_errors("listing groups"):
            docs = await self._groups.find({"members": user}).to_list(MAX_LISTED_GROUPS)
        return sorted((Group.from_doc(d) for d in docs), key=lambda g: g.id)

    # -- writes ---------------------------------------------------------------------------------------

    async def create(self, owner: str, name: str, members: Iterable[str]) -> Group:
        everyone = _unique([owner, *members])
        self._check_cap(len(everyone))
        group = Group(id=new_group_id(), name=name, owner=owner, members=everyone, created_at=utcnow())
        async with store_errors("creating a group"):
            await self._groups.insert_one({"_id": group.id, "name": name, "owner": owner, "admins": [],
                                           "members": everyone, "version": 0, "created_at": group.created_at})
        return group

    async def add_members(self, actor: str, group_id: str, users: Iterable[str]) -> Group:
        new = list(users)

        def change(group: Group) -> None:
            _require_manager(group, actor)
            group.members = _unique([*group.members, *new])
            self._check_cap(len(group.members))

        return await self._update(actor, group_id, change)

    async def remove_members(self, actor: str, group_id: str, users: Iterable[str]) -> Group:
        gone = set(users)

        def change(group: Group) -> None:
            _require_manager(group, actor)
            if group.owner in gone:
                raise ForbiddenError("the owner cannot be removed (the owner may leave)", code="not_allowed",
                                     field="members")
            if actor != group.owner and gone & set(group.admins):
                raise ForbiddenError("only the owner removes admins", code="not_allowed", field="members")
            group.members = [m for m in group.members if m not in gone]
            group.admins = [a for a in group.admins if a not in gone]

        return await self._update(actor, group_id, change)

    async def leave(self, user: str, group_id: str) -> Group:
        """Leave; a leaving owner hands the group to the first admin, else to the first member."""

        def change(group: Group) -> None:
            group.members = [m for m in group.members if m != user]
            group.admins = [a for a in group.admins if a != user]
            if group.owner == user and group.members:
                group.owner = (group.admins or group.members)[0]
                group.admins = [a for a in group.admins if a != group.owner]

        return await self._update(user, group_id, change)

    async def rename(self, actor: str, group_id: str, name: str) -> Group:
        def change(group: Group) -> None:
            _require_manager(group, actor)
            group.name = name

        return await self._update(actor, group_id, change)

    async def set_admin(self, actor: str, group_id: str, user: str, *, admin: bool) -> Group:
        def change(group: Group) -> None:
            if actor != group.owner:
                raise ForbiddenError("only the owner appoints or dismisses admins", code="not_allowed")
            if user not in group.members:
                raise NotFoundError(f"{user!r} is not a member", code="not_member", field="user")
            if user == group.owner:
                raise InvalidInput("the owner is not an admin", field="user")
            others = [a for a in group.admins if a != user]
            group.admins = [*others, user] if admin else others

        return await self._update(actor, group_id, change)

    async def _update(self, actor: str, group_id: str, change: Callable[[Group], None]) -> Group:
        for _ in range(MAX_UPDATE_ROUNDS):
            group = await self.of_member(group_id, actor)
            version = group.version
            change(group)
            group.version = version + 1
            async with store_errors("updating a group"):
                if not group.members:
                    result = await self._groups.delete_one({"_id": group_id, "version": version})
                    if result.deleted_count:
                        return group
                    continue
                result = await self._groups.update_one(
                    {"_id": group_id, "version": version},
                    {"$set": {"name": group.name, "owner": group.owner, "admins": group.admins,
                              "members": group.members, "version": group.version}},
                )
            if result.matched_count:
                return group
        raise ConflictError("the group is being changed by others; retry", code="busy")

    def _check_cap(self, count: int) -> None:
        if count > self.max_members:
            raise ConflictError(f"a group has at most {self.max_members} members", code="group_full",
                                field="members")


def _require_manager(group: Group, actor: str) -> None:
    if not group.can_manage(actor):
        raise ForbiddenError("only the owner or an admin may do this", code="not_allowed")


def _unique(users: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(users))
