"""Lines the terminal prints for messages.

Bodies, names and ids come from other users: control characters in them are shown escaped, because
printed raw they could move the cursor, clear the screen or retitle the terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["clock", "message_line", "printable"]

# Continuation lines of a multi-line body are indented under the first.
CONTINUATION_INDENT = "    "


def printable(value: object) -> str:
    """``value`` as text with every control character escaped, except newlines (indented) and tabs."""
    out = []
    for char in str(value):
        if char == "\n":
            out.append("\n" + CONTINUATION_INDENT)
        elif char == "\t" or char.isprintable():
            out.append(char)
        else:
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
    return "".join(out)


def clock(ts: object) -> str:
    """``HH:MM:SS`` local time of a message's ``ts`` (milliseconds since the Unix epoch)."""
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.localtime(ts / 1000))


def body_text(message: dict[str, Any]) -> str:
    """What to show of a body: the text, or a file's name and size."""
    body = message.get("body")
    if message.get("kind") == "file" and isinstance(body, dict):
        return f"[file {printable(body.get('name', '?'))}, {body.get('size', '?')} bytes]"
    return printable(body)


def message_line(message: dict[str, Any], *, me: str, group_name: Callable[[str], str]) -> str:
    """One message as ``[time] who: text``; group messages carry the group's name, as people know it."""
    stamp = clock(message.get("ts"))
    sender = str(message.get("from", "?"))
    who = "you" if sender == me else printable(sender)
    conv = str(message.get("conv", ""))
    text = body_text(message)
    if conv.startswith("g:"):
        return f"[{stamp}] [{printable(group_name(conv[2:]))}] {who}: {text}"
    if sender == me:
        return f"[{stamp}] you -> {printable(message.get('to', '?'))}: {text}"
    return f"[{stamp}] {who}: {text}"
