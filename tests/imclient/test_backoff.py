"""The retry delay: grows, is capped, is jittered, never zero."""

from __future__ import annotations

import random

from imclient.backoff import backoff_delay


def test_delay_grows_and_is_capped() -> None:
    low = random.Random(0)
    low.random = lambda: 0.0  # type: ignore[method-assign]
    assert [backoff_delay(n, base_secs=1, cap_secs=8, rand=low) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]


def test_delay_is_jittered_within_half_a_step() -> None:
    rand = random.Random(42)
    delays = [backoff_delay(3, base_secs=1, cap_secs=100, rand=rand) for _ in range(200)]
    assert all(4 <= d <= 8 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    assert backoff_delay(10_000, base_secs=1, cap_secs=15) <= 15
