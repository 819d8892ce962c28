"""Retry policies.

- `deferral_delay`: when a deferred message is tried again (exponential, jittered, capped),
  Postfix-like by default: about 5 minutes first, at most about 67 minutes apart. Before that
  schedule, mail that the relay refused on its first try with a 4xx about the message or its
  recipients (not a 421, not a connection or relay fault) gets one quick retry after about
  `retry_quick_s`: most such refusals (a relay briefly busy, a lock, a recipient check that
  timed out) are gone a second later, and waiting 5 minutes for them is most of fresh mail's
  tail. The quick retry takes the place of the schedule's first step: the second
  failure waits 2 x first, as it would have. A "slow down" (421, 4.7.x, "too many") is about
  the pace to the domain, which the domain's adaptive rate sets, not about the message: mail
  deferred only by slow-downs waits the first step each time, its delay does not double. Written
  out here: a deferral is not a retry loop in one process (the next attempt is a due time
  in Redis, taken by whichever worker comes), so tenacity's wait strategies, which read the
  state of a running `Retrying`, do not apply.
- `reconnect`: the one short in-process retry, for a relay connection that dropped
  within a batch (tenacity).
- `redis_backoff`: how a worker waits for Redis to come back (tenacity).
"""

from __future__ import annotations

import logging
import random

import tenacity
from tenacity import RetryCallState, Retrying

from drain.settings import Settings

log = logging.getLogger(__name__)


# Jitter: up to this share of the first delay is added, so mail deferred together spreads out.
JITTER_SHARE = 0.2


def deferral_delay(settings: Settings, attempts: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (1 for the first failure):
    first * 2^(attempts-1), plus a random 0 to 20 % of first, never more than retry_max."""
    first, cap = settings.retry_first_s, settings.retry_max_s
    jitter = (rng or random).uniform(0, first * JITTER_SHARE)
    exponent = max(1, attempts) - 1
    # 2^exponent overflows a float past about 1,000 attempts; by then the cap holds anyway.
    base = cap if exponent >= 1000 else first * 2.0**exponent
    return max(0.0, min(base + jitter, cap))


def next_try_in(settings: Settings, attempts: int, quick: bool, throttled: bool = False,
                rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts`-th failed attempt; `quick` when every failure of
    that attempt was the relay's 4xx about the message or a recipient, `throttled` when every
    one was a "slow down" (421, 4.7.x, "too many"): that says how fast to send to the domain,
    which its adaptive rate takes care of, and nothing about the message, so the message
    waits the schedule's first step each time rather than a delay that doubles."""
    delay = deferral_delay(settings, 1 if throttled else attempts, rng)
    if attempts <= 1 and quick and settings.retry_quick_s > 0:
        return min(settings.retry_quick_s * (1 + (rng or random).uniform(0, JITTER_SHARE)), delay)
    return delay


def redis_backoff() -> Retrying:
    """Keep trying a Redis operation while the server is away: 0.5 s doubling to 30 s."""
    import redis

    def _log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("Redis unavailable (%s); retrying in %.1fs", exc, state.upcoming_sleep)

    return Retrying(
        wait=tenacity.wait_exponential(multiplier=0.5, max=30),
        retry=tenacity.retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
        before_sleep=_log,
        reraise=True,
    )
