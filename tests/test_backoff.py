"""The deferral backoff written out in drain/retry.py: exponential from DRAIN_RETRY_FIRST,
jittered by up to 20 % of it, capped at DRAIN_RETRY_MAX (end to end: tests/test_retry.py)."""

from __future__ import annotations

import random

from drain.settings import Settings
from drain.worker.retry import deferral_delay, next_try_in


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


def test_the_quick_retry_is_never_longer_than_the_schedule_and_comes_only_first() -> None:
    rng = random.Random(3)
    settings = Settings(retry_first_s=300, retry_max_s=4000, retry_quick_s=1)
    assert all(1 <= next_try_in(settings, 1, True, rng=rng) <= 1.2 for _ in range(50))
    assert next_try_in(settings, 1, False, rng=rng) >= 300
    assert next_try_in(settings, 2, True, rng=rng) >= 600
    assert next_try_in(settings.with_(retry_quick_s=0), 1, True, rng=rng) >= 300
    assert next_try_in(settings.with_(retry_first_s=0), 1, True, rng=rng) == 0
