"""Reconnect and retry delays: capped exponential backoff with jitter, as a pure function.

Jitter matters when a node dies: hundreds of clients lose their connection in the same instant, and
without it they would all come back to the survivors in the same instant too.
"""

from __future__ import annotations

import random

__all__ = ["BASE_DELAY_SECS", "MAX_DELAY_SECS", "backoff_delay"]

# The first retry comes quickly (a restarting node is usually back within a second or two) ...
BASE_DELAY_SECS = 0.25
# ... and no client waits longer than this between attempts, so a recovered cluster is found soon.
MAX_DELAY_SECS = 15.0


def backoff_delay(
    attempt: int, *, base_secs: float = BASE_DELAY_SECS, cap_secs: float = MAX_DELAY_SECS,
    rand: random.Random | None = None,
) -> float:
    """Delay before retry number ``attempt`` (0 for the first retry).

    "Equal jitter": half of the capped exponential step is fixed, half random, so retries spread out
    yet never collapse to zero (a zero delay would turn a dead node into a busy loop).
    """
    step = min(cap_secs, base_secs * 2 ** min(max(attempt, 0), 32))
    draw = (rand or random).random()
    return step / 2 + draw * step / 2
