"""Token-bucket rate limits, per key (a user, an IP address, a login name).

The bucket arithmetic is a pure function of ``now`` so it is tested without clocks or sockets. Limits
are per node: behind a load balancer with N nodes a client can get up to N times the rate, which is
the usual trade for not paying a Redis round trip on every request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from im.errors import RateLimited
from im.lru import LruDict

__all__ = ["Bucket", "Limits", "RateLimiter", "take"]

# Buckets kept per limiter; the least recently used are forgotten first (a forgotten bucket is full).
MAX_TRACKED_KEYS = 100_000


@dataclass(slots=True)
class Bucket:
    tokens: float
    updated: float


def take(bucket: Bucket, *, now: float, rate_per_sec: float, burst: float, cost: float = 1.0) -> float:
    """Refill ``bucket`` up to ``now`` and take ``cost`` tokens from it.

    Returns 0.0 when allowed, else the seconds until ``cost`` tokens will be there (nothing is taken).
    """
    elapsed = max(0.0, now - bucket.updated)
    bucket.tokens = min(burst, bucket.tokens + elapsed * rate_per_sec)
    bucket.updated = now
    if bucket.tokens >= cost:
        bucket.tokens -= cost
        return 0.0
    return (cost - bucket.tokens) / rate_per_sec


class RateLimiter:
    """One limit (``rate_per_sec`` sustained, ``burst`` at once) applied to many keys."""

    def __init__(self, name: str, *, rate_per_sec: float, burst: float) -> None:
        if rate_per_sec <= 0 or burst < 1:
            raise ValueError(f"rate limit {name}: rate must be > 0 and burst >= 1")
        self.name = name
        self.rate_per_sec = rate_per_sec
        self.burst = burst
        self._buckets: LruDict[str, Bucket] = LruDict(MAX_TRACKED_KEYS)

    def check(self, key: str, *, cost: float = 1.0, now: float | None = None) -> None:
        """Take from ``key``'s bucket or raise :class:`RateLimited` with the wait in ``retry_after_secs``."""
        wait = self.peek_take(key, cost=cost, now=now)
        if wait > 0:
            raise RateLimited(f"too many requests ({self.name}); retry in {wait:.1f} s",
                              retry_after_secs=wait)

    def peek_take(self, key: str, *, cost: float = 1.0, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.touch(key)
        if bucket is None:
            bucket = Bucket(tokens=self.burst, updated=now)
            self._buckets.put(key, bucket)
        return take(bucket, now=now, rate_per_sec=self.rate_per_sec, burst=self.burst, cost=cost)

    def blocked_for(self, key: str, *, now: float | None = None) -> float:
        """Seconds until ``key`` may act again, without taking anything."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(self.burst, bucket.tokens + max(0.0, now - bucket.updated) * self.rate_per_sec)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate_per_sec


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits a node enforces; a ``None`` limiter is switched off."""

    per_ip: RateLimiter | None = None
    # Requests with a valid token count per device instead: callers behind one address (a NAT, a
    # proxy, a backend) do not share one bucket.
    per_device: RateLimiter | None = None
    sends_per_user: RateLimiter | None = None
    # Taken before any password is hashed: a refused attempt costs the node no hash.
    registrations_per_ip: RateLimiter | None = None
    logins_per_ip: RateLimiter | None = None
    login_failures_per_user: RateLimiter | None = None
    login_failures_per_ip: RateLimiter | None = None
    max_connections_per_user: int = 0  # 0: unlimited

    @staticmethod
    def limiter(name: str, rate_per_sec: float, burst: float) -> RateLimiter | None:
        return RateLimiter(name, rate_per_sec=rate_per_sec, burst=burst) if rate_per_sec > 0 else None
