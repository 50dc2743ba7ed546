"""Token-bucket arithmetic, tested as a pure function of `now`."""

from __future__ import annotations

import pytest

from im.errors import RateLimited
from im.limits import Bucket, RateLimiter, take


def test_take_allows_burst_then_asks_to_wait() -> None:
    bucket = Bucket(tokens=3, updated=0.0)
    assert [take(bucket, now=0.0, rate_per_sec=2, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert take(bucket, now=0.0, rate_per_sec=2, burst=3) == pytest.approx(0.5)
    assert take(bucket, now=0.5, rate_per_sec=2, burst=3) == 0.0  # refilled one token
    assert take(bucket, now=100.0, rate_per_sec=2, burst=3) == 0.0
    assert bucket.tokens == pytest.approx(2.0)  # refill is capped at the burst


def test_limiter_is_per_key_and_reports_retry_after() -> None:
    limiter = RateLimiter("test", rate_per_sec=1, burst=2)
    limiter.check("a", now=10.0)
    limiter.check("a", now=10.0)
    with pytest.raises(RateLimited) as err:
        limiter.check("a", now=10.0)
    assert err.value.retry_after_secs == pytest.approx(1.0)
    limiter.check("b", now=10.0)  # another key has its own bucket
    assert limiter.blocked_for("a", now=10.5) == pytest.approx(0.5)
    assert limiter.blocked_for("a", now=11.0) == 0.0


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter("x", rate_per_sec=0, burst=1)
