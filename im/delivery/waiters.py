"""A parked long-poll: a bare future the hub resolves, with a timer for the poll's timeout."""

from __future__ import annotations

import asyncio

__all__ = ["PollWaiter", "cancel_swallowed"]


class PollWaiter:
    """A long-poll waiting for its user's inbox to move: the hub resolves it with True (inbox moved,
    kicked, shutdown) and its timer with False (timeout). A future and a timer handle are the least
    a parked poll can cost: it holds no task of its own."""

    __slots__ = ("kicked", "woken")

    def __init__(self) -> None:
        self.woken: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.kicked = ""

    def _wake(self, woken: bool) -> None:
        if not self.woken.done():  # done: woken already, timed out, or the poll was cancelled
            self.woken.set_result(woken)

    def inbox_changed(self, seq: int) -> None:
        self._wake(True)

    def kick(self, reason: str) -> None:
        self.kicked = reason
        self._wake(True)

    def going_away(self) -> None:
        self._wake(True)  # answer now (with whatever is new); the client polls again elsewhere

    async def wait(self, timeout_secs: float) -> bool:
        """True once woken (also if that happened before this call), False after ``timeout_secs``."""
        if self.woken.done() or timeout_secs <= 0:
            return self.woken.done()
        timer = self.woken.get_loop().call_later(timeout_secs, self._wake, False)
        try:
            return await self.woken
        finally:
            timer.cancel()


def cancel_swallowed() -> bool:
    """True when the running task was asked to stop but an await swallowed the ``CancelledError``.

    On Python 3.11 ``asyncio.wait_for`` returns the inner result when that finished just as the cancel
    arrived (CPython gh-86296, fixed in 3.12), and the MongoDB driver writes to its sockets through
    it: a long-poll cancelled by a dropped connection during its pull would otherwise wait its whole
    timeout. ``Task.cancelling()`` still counts the request, so the caller can honour it.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
