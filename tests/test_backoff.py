"""The deferral backoff written out in drain/retry.py: exponential from DRAIN_RETRY_FIRST,
jittered by up to 20 % of it, capped at DRAIN_RETRY_MAX (end to end: tests/test_retry.py)."""

from __future__ import annotations

import random

from drain.settings import Settings
from drain.worker.retry import deferral_delay


def test_delays_double_from_the_first_within_the_jitter_and_stop_at_the_cap() -> None:
    settings = Settings(retry_first_s=300, retry_max_s=4000)
    rng = random.Random(7)
    for attempts in range(1, 40):
        floor = min(300 * 2 ** (attempts - 1), 4000)
        for _ in range(50):
            delay = deferral_delay(settings, attempts, rng)
            assert floor <= delay <= min(floor + 60, 4000), (attempts, delay)
    assert deferral_delay(settings, 0, rng) < 360  # "no attempt yet" counts as the first
    assert deferral_delay(settings, 10**6, rng) == 4000  # no overflow, the cap


def test_jitter_spreads_mail_deferred_together() -> None:
    delays = {round(deferral_delay(Settings(retry_first_s=300, retry_max_s=4000), 1), 3) for _ in range(100)}
    assert len(delays) > 50 and max(delays) - min(delays) > 30
