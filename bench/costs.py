"""What a measurement cost the processes it loaded: CPU seconds, store commands, loop turns.

Why a module: a measurement of the REST part (``bench/restload.py``) may be made of several windows
(a paced rate sent in slices that alternate with another kind of sender), and its costs must add up
over its own windows only. :class:`Costs` is switched on and off around each window.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from bench.loadgen import StoreCounters
from bench.loopturns import LoopTurns
from bench.procs import cpu_readings

__all__ = ["Costs"]


class Costs:
    """Over the windows between :meth:`resume` and :meth:`pause`: CPU seconds of each named process
    (``server``, ``store``) and of this load generator, the store's commands by kind (SecantusDB's
    ``serverStatus`` opcounters; none without a store), and the epoll waits (loop turns) of the
    ``server`` process. :meth:`open` before the first window, :meth:`close` after the last."""

    def __init__(self, pids: Mapping[str, int], counters: StoreCounters, *, count_turns: bool) -> None:
        self._pids = dict(pids)
        self._counters = counters
        self._turns = LoopTurns(self._pids["server"]) if count_turns and "server" in pids else None
        self.cpu_secs: Counter[str] = Counter()
        self.own_cpu_secs = 0.0
        self.wall_secs = 0.0
        self.store_commands: Counter[str] = Counter()
        self.loop_turns: int | None = None

    async def open(self) -> Costs:
        if self._turns is not None:
            await asyncio.to_thread(self._turns.start)  # perf attaches (~0.3 s), outside every window
        return self

    async def resume(self) -> None:
        self._ops = await self._counters.read()
        self._cpu = cpu_readings(self._pids)
        self._own, self._wall = time.process_time(), time.monotonic()
        if self._turns is not None:
            await asyncio.to_thread(self._turns.resume)

    async def pause(self) -> None:
        if self._turns is not None:
            await asyncio.to_thread(self._turns.pause)
        after = cpu_readings(self._pids)
        self.cpu_secs.update({k: after[k] - self._cpu[k] for k in after if k in self._cpu})
        self.own_cpu_secs += time.process_time() - self._own
        self.wall_secs += time.monotonic() - self._wall
        ops = await self._counters.read()
        if "command" in ops:
            ops["command"] -= 1  # this reading's own serverStatus (the store counts it before answering)
        self.store_commands.update({k: v - self._ops.get(k, 0) for k, v in ops.items()})

    async def close(self) -> None:
        if self._turns is not None:
            self.loop_turns = await asyncio.to_thread(self._turns.stop)

    def per_send(self, sends: int) -> dict[str, Any]:
        """The figures of the report: totals, and per acknowledged send where they are a cost."""
        per = max(1, sends)
        figures: dict[str, Any] = {
            "cpu_secs": dict(self.cpu_secs),
            "loadgen_cpu_share": self.own_cpu_secs / max(1e-9, self.wall_secs),
            "store_commands_per_send": {k: v / per for k, v in self.store_commands.items() if v > 0},
            "loop_turns": self.loop_turns,
            "loop_turns_per_send": self.loop_turns / per if self.loop_turns is not None else None,
        }
        if self.loop_turns is None:
            figures["loop_turns_error"] = self._turns.error if self._turns is not None else "not asked for"
        return figures
