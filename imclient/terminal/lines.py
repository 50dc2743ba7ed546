"""Reading what the user types.

On a terminal, prompt_toolkit owns the input line: messages that arrive while a line is half typed are
printed above it (``patch_stdout``) and the line is drawn again below them, intact; typed lines have a
history (up and down arrows) and Tab completes commands, user names and group names. Keys typed while
no prompt is shown (a command is running) are not echoed by the terminal either: the next prompt reads
and draws them. On a pipe (a script feeding commands) lines are read plainly, in a thread so incoming
messages keep printing.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

__all__ = ["ChatCompleter", "LineReader", "PlainLines", "PromptLines", "line_reader"]

Names = Callable[[], Iterable[str]]


class LineReader(Protocol):
    def active(self) -> contextlib.AbstractContextManager[None]:
        """While entered, output goes where it does not disturb the input line."""

    async def read(self) -> str | None:
        """The next typed line; None at the end of input (Ctrl-D, Ctrl-C, end of the pipe)."""


class ChatCompleter(Completer):
    """Completes the command word, the user after ``:c``, the group after ``:g``, and a first word that
    starts a user's name into ``USER;;`` (a direct message)."""

    def __init__(self, commands: Iterable[str], users: Names, groups: Names) -> None:
        self._commands = sorted(commands)
        self._users = users
        self._groups = groups

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        if text.startswith(":c "):
            yield from _starting_with(text[3:], self._users())
        elif text.startswith(":g "):
            yield from _starting_with(text[3:], self._groups())
        elif text.startswith(":"):
            if " " not in text:
                yield from _starting_with(text, self._commands)
        elif text and " " not in text and ";;" not in text:
            yield from _starting_with(text, self._users(), suffix=";;")


def _starting_with(typed: str, words: Iterable[str], suffix: str = "") -> Iterator[Completion]:
    for word in sorted(set(words)):
        if word.startswith(typed) and word != typed:
            yield Completion(word + suffix, start_position=-len(typed), display=word + suffix)


class PromptLines:
    """prompt_toolkit's line editor, with ``prompt()`` drawn before the input (it may change, e.g.
    with the current conversation)."""

    def __init__(self, prompt: Callable[[], str], completer: Completer) -> None:
        self._prompt = prompt
        self._session: PromptSession[str] = PromptSession(
            history=InMemoryHistory(), completer=completer, complete_while_typing=False)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with _typeahead_unechoed(sys.stdin), patch_stdout():
            yield

    async def read(self) -> str | None:
        try:
            return await self._session.prompt_async(self._prompt)
        except (EOFError, KeyboardInterrupt):
            return None


@contextlib.contextmanager
def _typeahead_unechoed(stream: TextIO) -> Iterator[None]:
    """Turn the terminal's own echo and line editing off between prompts.

    Echoed by the terminal, keys typed between two prompts would land wherever the cursor is and stay
    on the screen under later output; unechoed, they wait in the input and the next prompt shows them.
    prompt_toolkit restores the attributes it found after each prompt, so this holds between prompts.
    """
    try:
        import termios
    except ImportError:  # not a POSIX terminal: its own echo stays
        yield
        return
    fd = stream.fileno()
    try:
        before = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    quiet = list(before)
    quiet[3] &= ~(termios.ECHO | termios.ICANON)  # lflags; ISIG stays, so Ctrl-C still stops
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, before)


class PlainLines:
    """Lines of a stream that is not a terminal, read in a thread."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def active(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    async def read(self) -> str | None:
        line = await asyncio.get_running_loop().run_in_executor(None, self._stream.readline)
        return line or None


def line_reader(prompt: Callable[[], str], completer: Completer) -> LineReader:
    """The line editor when both ends are a terminal, else plain lines of stdin."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        return PromptLines(prompt, completer)
    return PlainLines(sys.stdin)
