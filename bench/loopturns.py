"""Event-loop turns of a process, counted by the kernel: ``perf stat`` on its ``epoll_wait`` syscalls.

Why: "how many loop turns does one send take" says whether a request is served in one wake-up or
bounces through callbacks and timers; the server exposes no loop counter. Every turn of uvloop
(libuv's ``uv__io_poll``) and of asyncio's selector loop makes one ``epoll_wait``-family call (libuv
makes more only when one call returns 1,024 ready descriptors, or is interrupted), so counting those
calls of every thread of the process counts turns (``epoll_ctl`` is not counted: it registers, it
does not wait). The counting is in-kernel (a tracepoint counter, no ptrace, no stop of the process),
so the measured process runs as it would.

perf starts with its counters off (``-D -1``) and is switched on and off through its control pipe
(``--control``, perf >= 5.9), so one perf process counts a measurement made of several windows (a
paced round sent in slices) and attaching (~0.3 s) happens once, outside every window. Needs ``perf``
and the right to trace the process (root, or ``perf_event_paranoid`` allowing it); without them the
figure is "not measured", never a guess.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["LoopTurns"]

# The syscalls one loop turn makes one of (which one depends on the loop and the libc).
WAIT_SYSCALLS = ("epoll_wait", "epoll_pwait", "epoll_pwait2")
TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
# perf needs a moment to attach before it can be switched on.
ATTACH_SECS = 0.3
# perf acknowledges a switch at once; longer means it is gone.
ACK_TIMEOUT_SECS = 5.0
STOP_TIMEOUT_SECS = 10.0


def _events() -> list[str]:
    """The tracepoints of WAIT_SYSCALLS this kernel has (naming a missing one makes perf refuse all)."""
    for root in TRACEFS:
        syscalls = root / "events" / "syscalls"
        with contextlib.suppress(OSError):
            if syscalls.is_dir():
                return [f"syscalls:sys_enter_{name}" for name in WAIT_SYSCALLS
                        if (syscalls / f"sys_enter_{name}").is_dir()]
    return []


class LoopTurns:
    """Counts ``pid``'s epoll waits while switched on (:meth:`resume` ... :meth:`pause`, any number
    of times) between :meth:`start` and :meth:`stop`; ``stop`` returns the count, or None when it
    could not be counted (``error`` says why). Blocking calls: run them off the event loop."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.error = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl = self._ack = -1
        self._out = Path(tempfile.mkstemp(prefix="loopturns-", suffix=".csv")[1])

    def start(self) -> LoopTurns:
        perf = shutil.which("perf")
        events = _events()
        if perf is None or not events:
            self.error = "perf is not installed" if perf is None else "no syscall tracepoints (tracefs)"
            return self
        ctl_read, self._ctl = os.pipe()
        self._ack, ack_write = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [perf, "stat", "-x", ",", "-e", ",".join(events), "-p", str(self.pid), "-D", "-1",
                 "--control", f"fd:{ctl_read},{ack_write}", "-o", str(self._out)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(ctl_read, ack_write),
            )
        finally:
            os.close(ctl_read)
            os.close(ack_write)
        time.sleep(ATTACH_SECS)
        if self._proc.poll() is not None:
            self._fail(f"perf stat exited with code {self._proc.returncode} (no right to trace, or a "
                       "perf without --control?)")
        return self

    def resume(self) -> None:
        self._switch("enable")

    def pause(self) -> None:
        self._switch("disable")

    def _switch(self, command: str) -> None:
        if self._proc is None:
            return
        os.write(self._ctl, command.encode() + b"\n")
        ready, _, _ = select.select([self._ack], [], [], ACK_TIMEOUT_SECS)
        if not ready or not os.read(self._ack, 64).startswith(b"ack"):
            self._fail(f"perf stat did not acknowledge {command!r}")

    def _fail(self, error: str) -> None:
        self.error = error
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def stop(self) -> int | None:
        """Stop perf (it writes its counts on SIGINT) and return the epoll waits counted."""
        proc, self._proc = self._proc, None
        try:
            if proc is None:
                return None
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_TIMEOUT_SECS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.error = "perf stat did not stop"
                return None
            return self._parse(self._out.read_text(errors="replace"))
        finally:
            for fd in (self._ctl, self._ack):
                if fd >= 0:
                    os.close(fd)
            self._ctl = self._ack = -1
            self._out.unlink(missing_ok=True)

    def _parse(self, text: str) -> int | None:
        """``perf stat -x ,`` lines are ``count,unit,event,...``; a count perf could not read is text."""
        total, seen = 0, False
        for line in text.splitlines():
            fields = line.split(",")
            if len(fields) < 3 or not fields[2].startswith("syscalls:"):
                continue
            if fields[0] == "<not counted>":
                fields[0] = "0"  # the process never ran while counted (asleep in one epoll_wait)
            if not fields[0].isdigit():
                self.error = f"perf could not count {fields[2]}: {fields[0]}"
                return None
            total += int(fields[0])
            seen = True
        if not seen:
            self.error = "perf wrote no counts"
            return None
        return total
