"""``im-client``: a terminal chat client on the SDK, with commands in the spirit of CIM's client.

    im-client --url http://127.0.0.1:8888 --user alice --register

Type a line to send it to the current conversation; ``bob;;hi`` sends "hi" to bob directly; ``:h``
lists the commands. The password comes from ``--password``, ``IM_CLIENT_PASSWORD`` or a prompt. The
device's place in its inbox is kept under ``$XDG_STATE_HOME/im-client/``, so a restart resumes where
the last run stopped. The parts live in :mod:`imclient.terminal`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from imclient.client import TRANSPORTS, Client
from imclient.errors import ApiError, ImClientError
from imclient.terminal.commands import COMMANDS, Terminal
from imclient.terminal.lines import ChatCompleter, line_reader
from imclient.terminal.places import default_state_path

__all__ = ["build_parser", "main"]


class TerminalLogHandler(logging.Handler):
    """The SDK's warnings (a refused login, a lost place file...) as lines of the session, so they
    scroll above the input line like everything else."""

    def __init__(self, terminal: Terminal) -> None:
        super().__init__(logging.WARNING)
        self._terminal = terminal

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._terminal.say(f"(im-client: {record.getMessage()})")
        except Exception:
            self.handleError(record)


async def run(args: argparse.Namespace, password: str) -> int:
    client = Client(args.url, args.user, password, device=args.device, transport=args.transport,
                    register=args.register, state_path=state_path_of(args))
    terminal = Terminal(client)
    client.on_message = terminal.on_message
    client.on_gap = terminal.on_gap
    sdk_log = logging.getLogger("imclient")
    sdk_log.addHandler(TerminalLogHandler(terminal))
    sdk_log.propagate = False  # printed once, by the handler above
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
    await terminal.prepare()
    completer = ChatCompleter(COMMANDS, users=lambda: terminal.people, groups=terminal.groups.names)
    lines = line_reader(terminal.prompt, completer)
    try:
        with lines.active():
            terminal.say(f"logged in as {args.user} ({client.connected_via}); :h for help")
            while (line := await lines.read()) is not None:
                if not await terminal.handle(line):
                    break
    finally:
        await client.close()
    terminal.say("bye")
    return 0


def state_path_of(args: argparse.Namespace) -> Path | None:
    if args.no_state:
        return None
    if args.state_file:
        return Path(args.state_file)
    return default_state_path(args.url[0], args.user, args.device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="im-client", description="Terminal chat client of im-server.")
    parser.add_argument("--url", action="append", default=None,
                        help="node base URL; repeat for several nodes (default http://127.0.0.1:8888)")
    parser.add_argument("--user", required=True, help="user id")
    parser.add_argument("--password", help="password (default: $IM_CLIENT_PASSWORD, else a prompt)")
    parser.add_argument("--register", action="store_true", help="create the account first if needed")
    parser.add_argument("--device", default="cli", help="device name (each device has its own cursor)")
    parser.add_argument("--transport", choices=TRANSPORTS, default="auto")
    parser.add_argument("--state-file", help="where this device's inbox place is kept between runs "
                        "(default $XDG_STATE_HOME/im-client/<server>/<user>-<device>.json)")
    parser.add_argument("--no-state", action="store_true",
                        help="keep no place between runs (every start reads the inbox from its beginning)")
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
