"""The terminal client in a real pseudo-terminal (pexpect), typed at as a person would."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import pexpect

from tests.helpers import PASSWORD, Node, eventually

REPO = Path(__file__).resolve().parents[2]
EXPECT_TIMEOUT_SECS = 20
# Escape sequences a terminal acts on (cursor moves, colours, modes): stripped to read the text.
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Za-z0-9]|\x1b[=>78]|[\x07\x08]")
# What Screen acts on: a CSI sequence (parameters, final byte), another escape, a control, or text.
_TOKENS = re.compile(r"\x1b\[([0-9;?]*)[ -/]*([@-~])|\x1b[()][A-Za-z0-9]|\x1b.|([\r\n\x08])|([^\x1b\r\n\x08]+)")


class TerminalClient:
    """``python -m imclient.cli`` for ``user`` in a pty of 24x120.

    Its state directory is ``state_home`` (never the real home). ``TERM`` is a real terminal's and
    cursor position requests are off: pexpect does not answer them, a terminal does.
    """

    def __init__(self, node: Node, user: str, state_home: Path, *extra: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "IM_CLIENT_PASSWORD": PASSWORD, "PYTHONUNBUFFERED": "1",
               "XDG_STATE_HOME": str(state_home), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        self.transcript = io.StringIO()
        self.child = pexpect.spawn(
            sys.executable, ["-m", "imclient.cli", "--url", node.base_url, "--user", user, *extra],
            cwd=str(REPO), env=env, encoding="utf-8", timeout=EXPECT_TIMEOUT_SECS, dimensions=(24, 120))
        self.child.logfile_read = self.transcript

    async def expect(self, pattern: str | type[pexpect.EOF], timeout: float = EXPECT_TIMEOUT_SECS) -> None:
        await self.child.expect(pattern, timeout=timeout, async_=True)

    async def printed(self, text: str, timeout: float = EXPECT_TIMEOUT_SECS) -> None:
        """Wait until ``text`` was printed at any time since the start (``expect`` only looks past its
        last match; messages delivered while the client starts come before its first line)."""

        async def seen() -> bool:
            if text not in self.text():  # reading the pty is what fills the transcript
                await self.child.expect([re.escape(text), pexpect.TIMEOUT], timeout=0.1, async_=True)
            return text in self.text()

        await eventually(seen, timeout_secs=timeout, what=f"{text!r} printed")

    async def started(self) -> None:
        await self.expect(r"logged in as \w+ \((ws|longpoll)\)")

    def type(self, text: str) -> None:
        """Keys typed, without Enter."""
        self.child.send(text)

    def enter(self, line: str) -> None:
        """A line typed and Enter pressed (a terminal sends CR)."""
        self.child.send(line + "\r")

    async def quit(self) -> int:
        self.enter(":q")
        await self.expect("bye")
        await self.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus

    def close(self) -> None:
        self.child.close(force=True)

    def text(self) -> str:
        """What was printed so far, escape sequences removed, one string per printed row."""
        return _ESCAPES.sub("", self.transcript.getvalue())

    def screen(self) -> list[str]:
        """The rows on the terminal's screen now, blank ones left out."""
        return [row for row in Screen(self.transcript.getvalue()).lines() if row.strip()]


class Screen:
    """The rows a terminal would show for what was printed: text overwrites at the cursor, and the
    cursor moves and erasures a line editor uses (CR, LF, BS, CSI A B C D G H J K) are carried out.
    Rows are not limited to the pty's height (nothing scrolls away), which is all the tests need."""

    def __init__(self, output: str) -> None:
        self.rows: list[list[str]] = [[]]
        self.row = self.col = 0
        for match in _TOKENS.finditer(output):
            params, final, control, text = match.groups()
            if text:
                self._write(text)
            elif control:
                self._control(control)
            elif final:
                self._csi(params or "", final)

    def lines(self) -> list[str]:
        return ["".join(row).rstrip() for row in self.rows]

    def _line(self) -> list[str]:
        while len(self.rows) <= self.row:
            self.rows.append([])
        return self.rows[self.row]

    def _write(self, text: str) -> None:
        line = self._line()
        for char in text:
            if self.col >= len(line):
                line.extend(" " * (self.col - len(line) + 1))
            line[self.col] = char
            self.col += 1

    def _control(self, char: str) -> None:
        if char == "\r":
            self.col = 0
        elif char == "\n":
            self.row += 1
            self._line()
        elif char == "\x08":
            self.col = max(0, self.col - 1)

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return  # private modes (cursor shown, bracketed paste...): nothing on the screen
        numbers = [int(n) if n else 0 for n in params.split(";")] if params else []
        n = numbers[0] if numbers and numbers[0] else 1
        if final == "A":
            self.row = max(0, self.row - n)
        elif final == "B":
            self.row += n
        elif final == "C":
            self.col += n
        elif final == "D":
            self.col = max(0, self.col - n)
        elif final == "G":
            self.col = n - 1
        elif final == "H":
            self.row = (numbers[0] if numbers and numbers[0] else 1) - 1
            self.col = (numbers[1] if len(numbers) > 1 and numbers[1] else 1) - 1
        elif final == "J" and (not numbers or numbers[0] == 0):
            del self._line()[self.col:]
            del self.rows[self.row + 1:]
        elif final == "K" and (not numbers or numbers[0] == 0):
            del self._line()[self.col:]
