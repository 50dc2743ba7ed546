"""``im-client``: a terminal chat client on the SDK, with commands in the spirit of CIM's client.

    im-client --url http://127.0.0.1:8888 --user alice --register

Type a line to send it to the current conversation; ``bob;;hi`` sends "hi" to bob directly. Commands:
``:h`` help, ``:q`` quit, ``:olu`` online users, ``:c USER`` chat with a user, ``:g NAME`` switch to a
group. Entering a conversation shows its recent history. The password comes from ``--password``,
``IM_CLIENT_PASSWORD`` or a prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any, TextIO

from imclient.client import TRANSPORTS, Client
from imclient.errors import ApiError, ImClientError

__all__ = ["main"]

HELP = """commands:
  text            send to the current conversation
  USER;;text      send text to USER directly
  :c USER         chat with USER (shows recent history)
  :g NAME         switch to group NAME (shows recent history)
  :olu            list online users
  :h              this help
  :q              quit"""
# Messages of each conversation kept in memory for the history shown on entering it.
HISTORY_LINES = 20


class Terminal:
    """The interactive session: reads lines, runs commands, prints incoming messages."""

    def __init__(self, client: Client, out: TextIO) -> None:
        self.client = client
        self.out = out
        self.target: tuple[str, str] | None = None  # ("user", id) or ("group", name)
        self.seen: defaultdict[str, deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=HISTORY_LINES))

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # -- incoming -------------------------------------------------------------------------------------

    def on_message(self, message: dict[str, Any]) -> None:
        if message.get("kind") == "receipt":
            return  # delivered/read receipts of what this user sent: not chat lines
        self.seen[message.get("conv", "")].append(message)
        self.say(self.format(message))

    def on_gap(self, reply: dict[str, Any]) -> None:
        self.say("(some older messages were trimmed before this device got them)")

    def format(self, message: dict[str, Any]) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(message.get("ts", 0) / 1000))
        sender = message.get("from", "?")
        conv = str(message.get("conv", ""))
        who = "you" if sender == self.client.user else sender
        if conv.startswith("g:"):
            return f"[{stamp}] [{message.get('group') or conv[2:]}] {who}: {message.get('body')}"
        if sender == self.client.user:
            return f"[{stamp}] you -> {message.get('to')}: {message.get('body')}"
        return f"[{stamp}] {who}: {message.get('body')}"

    # -- commands -------------------------------------------------------------------------------------

    async def handle(self, line: str) -> bool:
        """Run one input line; False means quit."""
        line = line.strip()
        if not line:
            return True
        if line == ":q":
            return False
        if line == ":h":
            self.say(HELP)
        elif line == ":olu":
            await self.online_users()
        elif line.startswith(":g "):
            await self.enter(("group", line[3:].strip()))
        elif line.startswith(":c "):
            await self.enter(("user", line[3:].strip()))
        elif line.startswith(":"):
            self.say(f"unknown command {line.split()[0]!r}; :h for help")
        elif ";;" in line:
            user, _, text = line.partition(";;")
            await self.send(("user", user.strip()), text)
        elif self.target is None:
            self.say("no conversation yet: USER;;text, :c USER or :g NAME (:h for help)")
        else:
            await self.send(self.target, line)
        return True

    async def send(self, target: tuple[str, str], text: str) -> None:
        kind, name = target
        if not name or not text:
            self.say("nothing to send")
            return
        try:
            if kind == "group":
                await self.client.send_group(name, text, deadline_secs=30)
            else:
                await self.client.send(name, text, deadline_secs=30)
        except ApiError as error:
            if kind == "group" and error.field in ("to", "group"):
                self.say("this server does not support groups (no group API)")
            else:
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
        users = [u["user"] for u in page.get("users", [])]
        self.say(f"online ({len(users)}{'+' if page.get('more') else ''}): " + (", ".join(users) or "nobody"))

    async def enter(self, target: tuple[str, str]) -> None:
        kind, name = target
        if not name:
            self.say("name missing; :h for help")
            return
        self.target = target
        conv = f"g:{name}" if kind == "group" else _direct(self.client.user, name)
        self.say(f"-- now chatting with {'group ' if kind == 'group' else ''}{name} --")
        for message in await self.history(conv, target):
            self.say(self.format(message))

    async def history(self, conv: str, target: tuple[str, str]) -> list[dict[str, Any]]:
        """Recent messages of ``conv``: from the server's history API when it has one, else what this
        session has seen."""
        kind, name = target
        query = {"group": name} if kind == "group" else {"with": name}
        try:
            reply = await self.client.request("GET", "/api/v1/history",
                                              query={**query, "limit": HISTORY_LINES})
        except (ApiError, ImClientError):
            return list(self.seen.get(conv, ()))
        messages = reply.get("messages", []) if isinstance(reply, dict) else []
        return sorted(messages, key=lambda m: (m.get("ts", 0), m.get("msg_id", "")))[-HISTORY_LINES:]


def _direct(a: str, b: str) -> str:
    first, second = sorted((a, b))
    return f"d:{first}:{second}"


async def _lines(stream: TextIO) -> Any:
    """Lines typed by the user, read in a thread so incoming messages keep printing meanwhile."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, stream.readline)
        if not line:
            return
        yield line


async def run(args: argparse.Namespace, password: str) -> int:
    out = sys.stdout
    client = Client(args.url, args.user, password, device=args.device, transport=args.transport,
                    register=args.register)
    terminal = Terminal(client, out)
    client.on_message = terminal.on_message
    client.on_gap = terminal.on_gap
    try:
        await client.start()
    except ApiError as error:
        print(f"im-client: {error.message}", file=sys.stderr)
        await client.close()
        return 1
    except ImClientError as error:
        print(f"im-client: {error}", file=sys.stderr)
        await client.close()
        return 1
    terminal.say(f"logged in as {args.user} ({client.connected_via}); :h for help")
    try:
        async for line in _lines(sys.stdin):
            if not await terminal.handle(line):
                break
    finally:
        await client.close()
    terminal.say("bye")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="im-client", description="Terminal chat client of im-server.")
    parser.add_argument("--url", action="append", default=None,
                        help="node base URL; repeat for several nodes (default http://127.0.0.1:8888)")
    parser.add_argument("--user", required=True, help="user id")
    parser.add_argument("--password", help="password (default: $IM_CLIENT_PASSWORD, else a prompt)")
    parser.add_argument("--register", action="store_true", help="create the account first if needed")
    parser.add_argument("--device", default="cli", help="device name (each device has its own cursor)")
    parser.add_argument("--transport", choices=TRANSPORTS, default="auto")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.url = args.url or ["http://127.0.0.1:8888"]
    password = args.password or os.environ.get("IM_CLIENT_PASSWORD") or getpass.getpass("password: ")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(args, password))
    return 130


if __name__ == "__main__":
    sys.exit(main())
