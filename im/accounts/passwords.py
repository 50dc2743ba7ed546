"""Password hashing (scrypt), off the event loop and with bounded concurrency.

The parameters are stored with each hash so they can be raised later without invalidating old hashes.
A hash costs tens of milliseconds of a core by design, and sign-ins and registrations can come in
bursts (an attacker's, or many at once): run without bound, the hashes take every core and message
traffic waits behind them. So a node's :class:`PasswordHasher` computes at most ``concurrency`` hashes
at once, each in a thread of its own (``hashlib.scrypt`` releases the GIL) that runs at a lower CPU
priority than the event loop and the store, lets a bounded number wait for a slot, and refuses the
rest at once with ``429 auth_busy`` and a ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar, cast

from im.errors import RateLimited

__all__ = [
    "MAX_PASSWORD_CHARS",
    "MIN_PASSWORD_CHARS",
    "PasswordHasher",
    "check_hash",
    "hash_password",
    "make_hash",
    "verify_password",
]

# scrypt cost: N=2**14, r=8 uses 16 MiB per hash, below OWASP's N=2**17 so that a login storm on a
# small node stays responsive; the cost is stored per hash and can be raised.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM_BYTES = 64 * 1024 * 1024
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
# What a hash is assumed to take until the first one is timed (it only shapes Retry-After).
ASSUMED_HASH_SECS = 0.1
# Weight of the newest timing in the running mean behind Retry-After.
HASH_SECS_SMOOTHING = 0.2
# Nice value of a hashing thread (Linux): below the event loop and the store, which serve messages,
# yet not starved (about a tenth of a core's share when they want that core too).
HASH_THREAD_NICENESS = 10

T = TypeVar("T")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM_BYTES, dklen=32
    )


def make_hash(password: str) -> str:
    """Return ``scrypt$N$r$p$salt$hash`` for storage (blocking: costs one hash)."""
    salt = os.urandom(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_hash(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a hash made by :func:`make_hash` (blocking)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, actual)


async def hash_password(password: str) -> str:
    """One hash in a worker thread, outside any node's bound (tools, and a node's own start-up)."""
    return await asyncio.to_thread(make_hash, password)


async def verify_password(password: str, stored: str) -> bool:
    """:func:`check_hash` in a worker thread, outside any node's bound."""
    return await asyncio.to_thread(check_hash, password, stored)


class PasswordHasher:
    """A node's password hashing: at most ``concurrency`` hashes at once, ``max_waiting`` more queued.

    ``running`` and ``peak_running`` count the hashes inside worker threads, where the CPU is spent,
    so the bound is observed where it matters, not inferred from timings.
    """

    def __init__(self, *, concurrency: int, max_waiting: int) -> None:
        if concurrency < 1 or max_waiting < 0:
            raise ValueError("password hashing: concurrency must be >= 1 and max_waiting >= 0")
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self._slots = asyncio.Semaphore(concurrency)
        self._admitted = 0  # hashes running or waiting for a slot; never above concurrency + max_waiting
        self._mean_secs = ASSUMED_HASH_SECS
        self._count_lock = threading.Lock()
        self.running = 0
        self.peak_running = 0

    async def hash(self, password: str) -> str:
        return await self._run(make_hash, password)

    async def verify(self, password: str, stored: str) -> bool:
        return await self._run(check_hash, password, stored)

    def retry_after_secs(self) -> float:
        """How long the hashes admitted now take to drain: when a refused caller may find room."""
        return max(1.0, self._admitted * self._mean_secs / self.concurrency)

    def refuse_if_full(self) -> None:
        """Raise the ``auth_busy`` refusal now if a hash would be refused, so a caller about to spend
        a store read on a hash is turned away before it."""
        if self._admitted >= self.concurrency + self.max_waiting:
            raise RateLimited("too many sign-ins and registrations on this server right now; "
                              f"retry in {self.retry_after_secs():.0f} s",
                              retry_after_secs=self.retry_after_secs(), code="auth_busy")

    async def _run(self, work: Callable[..., T], *args: str) -> T:
        self.refuse_if_full()
        self._admitted += 1
        try:
            await self._slots.acquire()
        except BaseException:
            self._admitted -= 1
            raise
        job = _in_low_priority_thread(self._counted, work, *args)
        # The slot is freed when the thread is done, not when the caller stops waiting: a caller that
        # goes away cannot stop a hash already running, and that hash still holds a core.
        job.add_done_callback(self._release)
        return await asyncio.shield(job)

    def _release(self, job: asyncio.Future[object]) -> None:
        self._slots.release()
        self._admitted -= 1
        if not job.cancelled():
            job.exception()  # retrieved here, so one whose caller went away is not reported as lost

    def _counted(self, work: Callable[..., T], *args: str) -> T:
        with self._count_lock:
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
        started = time.monotonic()
        try:
            return work(*args)
        finally:
            elapsed = time.monotonic() - started
            with self._count_lock:
                self.running -= 1
                self._mean_secs += HASH_SECS_SMOOTHING * (elapsed - self._mean_secs)


def _in_low_priority_thread(work: Callable[..., T], *args: object) -> asyncio.Future[T]:
    """Run ``work(*args)`` in a new thread that first lowers its own CPU priority; the future is
    resolved on the calling loop.

    A thread per hash rather than a pool: starting one costs a fraction of a millisecond against tens
    for the hash, and a node needs no pool to shut down. The priority is per thread on Linux only.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(cast(T, result))

    def run() -> None:
        _lower_this_threads_priority()
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work(*args)
        except BaseException as caught:
            error = caught
        # The loop may have closed meanwhile (shutdown): then nobody waits for this hash any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=run, name="password-hash", daemon=True).start()
    return future


def _lower_this_threads_priority() -> None:
    if not sys.platform.startswith("linux"):
        return  # elsewhere PRIO_PROCESS names the whole process, not this thread
    # Not permitted here: the hash runs at normal priority, still bounded in number.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)
