"""What a typed line does: send it, or run a command (in the spirit of CIM's client).

The session keeps the current conversation, the names worth completing, and prints incoming messages
as they arrive. Output goes to whatever ``sys.stdout`` is at the moment of printing, so the line
editor can route it above the input line.
"""

from __future__ import annotations

import contextlib
import sys
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from imclient.errors import ApiError, ImClientError
from imclient.terminal.groups import GroupDirectory, GroupNotChosen
from imclient.terminal.history import recent_messages
from imclient.terminal.render import message_line, printable

if TYPE_CHECKING:
    from imclient.client import Client

__all__ = ["COMMANDS", "HELP", "Conversation", "Terminal"]

HELP = """commands:
  text            send to the current conversation
  USER;;text      send text to USER directly
  :c USER         chat with USER (shows recent history)
  :g GROUP        chat in one of your groups, by name or id (shows recent history)
  :groups         list your groups
  :olu            list online users
  :logout         sign out this device and quit
  :logout all     sign out every device of yours and quit
  :h              this help
  :q              quit
Tab completes commands and names; up and down arrows recall typed lines."""
COMMANDS = (":c", ":g", ":groups", ":olu", ":logout", ":h", ":q")
# Messages of each conversation shown on entering it.
HISTORY_LINES = 20


@dataclass(frozen=True, slots=True)
class Conversation:
    """Where plain lines go: a user (``kind`` "user", ``id`` the user id) or a group (its id)."""

    kind: str
    id: str
    label: str

    def conv(self, me: str) -> str:
        if self.kind == "group":
            return f"g:{self.id}"
        first, second = sorted((me, self.id))
        return f"d:{first}:{second}"


class Terminal:
    """The interactive session over one SDK client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.groups = GroupDirectory(client)
        self.target: Conversation | None = None
        #: Users worth completing: peers of messages, friends, online users, chats entered.
        self.people: set[str] = set()
        # What this session has seen of each conversation: shown on entering it when the server keeps
        # no history.
        self.seen: defaultdict[str, deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=HISTORY_LINES))

    def say(self, text: str) -> None:
        print(text, file=sys.stdout, flush=True)

    def prompt(self) -> str:
        """The input line's prompt: the current conversation."""
        if self.target is None:
            return "> "
        name = f"[{self.target.label}]" if self.target.kind == "group" else self.target.label
        return f"{printable(name)}> "

    async def prepare(self) -> None:
        """Learn the names worth completing; a server without these calls simply offers fewer."""
        with contextlib.suppress(GroupNotChosen, ImClientError):
            await self.groups.refresh()
        with contextlib.suppress(ImClientError):
            reply = await self.client.request("GET", "/api/v1/friends")
            friends = reply.get("friends", []) if isinstance(reply, dict) else []
            self.people.update(str(f["user"]) for f in friends if isinstance(f, dict) and "user" in f)

    # -- incoming -------------------------------------------------------------------------------------

    async def on_message(self, message: dict[str, Any]) -> None:
        if message.get("kind") == "receipt":
            return  # delivered/read receipts of what this user sent: not chat lines
        conv = str(message.get("conv", ""))
        self.seen[conv].append(message)
        if conv.startswith("g:"):
            await self.groups.name_of(conv[2:])  # so the line below names a group joined meanwhile
        else:
            self.people.update(str(message.get(k, "")) for k in ("from", "to"))
            self.people.discard(self.client.user)
        self.say(self.line(message))

    def on_gap(self, reply: dict[str, Any]) -> None:
        if self.client.epoch is None:
            return  # a device's first pull: it held nothing, so nothing was missed
        self.say("(messages that came while this device was away were trimmed before it got them; "
                 ":c USER or :g GROUP shows a conversation's history)")

    def line(self, message: dict[str, Any]) -> str:
        return message_line(message, me=self.client.user, group_name=self.groups.known_name)

    # -- commands -------------------------------------------------------------------------------------

    async def handle(self, line: str) -> bool:
        """Run one input line; False means quit."""
        line = line.strip()
        command, _, argument = line.partition(" ")
        argument = argument.strip()
        if not line:
            return True
        if line == ":q":
            return False
        if line == ":h":
            self.say(HELP)
        elif line == ":olu":
            await self.online_users()
        elif line == ":groups":
            await self.list_groups()
        elif command == ":logout":
            return await self.logout(argument)
        elif command == ":g":
            await self.enter_group(argument)
        elif command == ":c":
            await self.enter_chat(argument)
        elif line.startswith(":"):
            self.say(f"unknown command {printable(command)!r}; :h for help")
        elif ";;" in line:
            user, _, text = line.partition(";;")
            await self.send(Conversation("user", user.strip(), user.strip()), text.strip())
        elif self.target is None:
            self.say("not sent: no conversation yet: USER;;text, :c USER or :g GROUP (:h for help)")
        else:
            await self.send(self.target, line)
        return True

    async def send(self, target: Conversation, text: str) -> None:
        if not target.id or not text:
            self.say("nothing to send")
            return
        try:
            if target.kind == "group":
                await self.client.send_group(target.id, text, deadline_secs=30)
            else:
                await self.client.send(target.id, text, deadline_secs=30)
        except ApiError as error:
            self.say(f"not sent: {error.message}")
        except ImClientError as error:
            self.say(f"not sent: {error}")

    async def online_users(self) -> None:
        try:
            page = await self.client.request("GET", "/api/v1/presence", query={"limit": 100})
        except ApiError as error:
            if error.status in (404, 405):
                self.say("this server has no presence API (GET /api/v1/presence)")
            else:
                self.say(f"online users unavailable: {error.message}")
            return
        except ImClientError as error:
            self.say(f"online users unavailable: {error}")
            return
        users = [str(u["user"]) for u in page.get("users", [])]
        self.people.update(u for u in users if u != self.client.user)
        listed = ", ".join(printable(u) for u in users) or "nobody"
        self.say(f"online ({len(users)}{'+' if page.get('more') else ''}): {listed}")

    async def list_groups(self) -> None:
        try:
            groups = await self.groups.refresh()
        except GroupNotChosen as error:
            self.say(str(error))
            return
        except ImClientError as error:
            self.say(f"groups unavailable: {error}")
            return
        if not groups:
            self.say("you are in no group")
        for group in groups:
            self.say(f"  {printable(group.name)}  (id {group.id})")

    async def enter_group(self, text: str) -> None:
        if not text:
            self.say("group name missing; :h for help")
            return
        # A failed switch leaves no conversation: lines meant for the group must not go to the last one.
        self.target = None
        try:
            group = await self.groups.find(text)
        except GroupNotChosen as error:
            self.say(printable(str(error)))
            return
        except ImClientError as error:
            self.say(f"groups unavailable: {error}")
            return
        await self.enter(Conversation("group", group.id, group.name))

    async def enter_chat(self, user: str) -> None:
        if not user:
            self.say("user name missing; :h for help")
            return
        self.target = None
        try:
            await self.client.request("GET", f"/api/v1/users/{quote(user, safe='')}")
        except ApiError as error:
            if error.code in ("unknown_user", "invalid"):
                self.say(f"no user {printable(user)!r}")
                return
            # Another answer (a server without the call): sending will tell whether the user exists.
        except ImClientError:
            pass
        self.people.add(user)
        await self.enter(Conversation("user", user, user))

    async def enter(self, target: Conversation) -> None:
        self.target = target
        what = f"group {target.label}" if target.kind == "group" else target.label
        self.say(f"-- now chatting with {printable(what)} --")
        conv = target.conv(self.client.user)
        try:
            messages = await recent_messages(self.client, conv, HISTORY_LINES)
        except ImClientError as error:
            self.say(f"(history unavailable: {error})")
            messages = None
        for message in messages if messages is not None else list(self.seen.get(conv, ())):
            self.say(self.line(message))

    async def logout(self, argument: str) -> bool:
        if argument not in ("", "all"):
            self.say(":logout signs out this device; :logout all signs out every device")
            return True
        try:
            reply = await self.client.logout(all_devices=argument == "all")
        except ImClientError as error:
            self.say(f"sign-out not confirmed ({error}); the client stopped, try again later")
            return False
        if reply.get("signed_out") == "device":
            self.say(f"signed out of this device ({printable(reply.get('device', self.client.device))})")
        elif argument == "all":
            self.say("signed out on every device")
        else:
            self.say("signed out on every device (this server signs out all devices at once)")
        return False
