"""The event loop our processes run on: uvloop when it is installed, else asyncio's own.

Why uvloop: Tornado, the driver and the SDK all run on asyncio, and a busy node spends a large share of
its time in the loop's own Python code (scheduling callbacks, polling, socket transports). uvloop is the
same loop in C on libuv, a drop-in replacement; what it saves is in docs/performance.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["CHOICES", "LoopUnavailable", "loop_factory", "loop_name", "run"]

T = TypeVar("T")

# auto: uvloop when it can be imported, asyncio's loop otherwise.
CHOICES = ("auto", "uvloop", "asyncio")


class LoopUnavailable(RuntimeError):
    """The loop asked for cannot be made here (uvloop is not installed)."""


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What ``asyncio.Runner`` should make the loop with (None: asyncio's default loop)."""
    if choice not in CHOICES:
        raise ValueError(f"event loop must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "auto":
            return None
        raise LoopUnavailable("event loop 'uvloop' was asked for, but uvloop is not installed") from None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``uvloop`` or ``asyncio``: which loop is running (for logs and reports)."""
    loop = loop or asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
