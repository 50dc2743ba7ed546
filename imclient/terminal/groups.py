"""The user's groups, found by what people type: a group's name, or its id when names clash.

The server takes group ids (``POST /api/v1/messages {group}``); people know groups by name, and two of
a user's groups may share one. The list comes from ``GET /api/v1/groups`` and is read again whenever
a name is looked up, so a group joined or renamed meanwhile is found.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imclient.errors import ApiError

if TYPE_CHECKING:
    from imclient.client import Client

__all__ = ["Group", "GroupDirectory", "GroupNotChosen"]

# A group id still unknown after a refresh (a group one has left) refreshes the list again at most
# this often, so its messages do not cost a request each.
UNKNOWN_GROUP_REFRESH_SECS = 10.0
# Looking up a name for an incoming line holds up the messages behind it: it may not wait long.
NAME_LOOKUP_TIMEOUT_SECS = 3.0


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    name: str

    @property
    def conv(self) -> str:
        return f"g:{self.id}"


class GroupNotChosen(Exception):
    """A group name or id that names none of the user's groups, or more than one; the message says
    which and what to type instead."""


class GroupDirectory:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._by_id: dict[str, Group] = {}
        self._refreshed_at = float("-inf")
        # Ids that a refresh did not find.
        self._missing: set[str] = set()

    async def refresh(self, timeout_secs: float = 30.0) -> list[Group]:
        """Read the user's groups from the server; raises :class:`GroupNotChosen` on a server without
        the group API."""
        try:
            reply = await self._client.request("GET", "/api/v1/groups", timeout_secs=timeout_secs)
        except ApiError as error:
            if error.status in (404, 405):
                raise GroupNotChosen("this server does not support groups (no group API)") from None
            raise
        self._refreshed_at = time.monotonic()
        groups = [_group(item) for item in (reply or {}).get("groups", []) if isinstance(item, dict)]
        self._by_id = {group.id: group for group in groups}
        return sorted(groups, key=lambda group: (group.name.casefold(), group.id))

    async def find(self, text: str) -> Group:
        """The one group ``text`` names: its id, else its exact name, else its name in any case."""
        groups = await self.refresh()
        by_id = self._by_id.get(text)
        if by_id is not None:
            return by_id
        for matches in ([g for g in groups if g.name == text],
                        [g for g in groups if g.name.casefold() == text.casefold()]):
            if len(matches) == 1:
                return matches[0]
            if matches:
                ids = ", ".join(g.id for g in matches)
                raise GroupNotChosen(f"{len(matches)} of your groups are named {text!r} (ids {ids}); "
                                     f"choose one with :g ID")
        raise GroupNotChosen(f"you are in no group named {text!r} (:groups lists yours)")

    async def name_of(self, group_id: str) -> str:
        """The group's name for display; its id when it is not (or no longer) among the user's."""
        group = self._by_id.get(group_id)
        recently = time.monotonic() - self._refreshed_at < UNKNOWN_GROUP_REFRESH_SECS
        if group is None and not (group_id in self._missing and recently):
            try:
                await self.refresh(timeout_secs=NAME_LOOKUP_TIMEOUT_SECS)
            except Exception:  # a name is only decoration: the message is shown either way
                self._refreshed_at = time.monotonic()
            group = self._by_id.get(group_id)
            if group is None:
                self._missing.add(group_id)
        return group.name if group is not None else group_id

    def known_name(self, group_id: str) -> str:
        """The name from the list as last read (no request), else the id."""
        group = self._by_id.get(group_id)
        return group.name if group is not None else group_id

    def names(self) -> list[str]:
        """Names to complete ``:g`` with."""
        return sorted({group.name for group in self._by_id.values()})


def _group(item: dict[str, Any]) -> Group:
    group_id = str(item.get("group", ""))
    return Group(id=group_id, name=str(item.get("name") or group_id))
