"""Retry policies, all expressed with tenacity.

- `deferral_delay`: when a deferred message is tried again (exponential, jittered, capped),
  Postfix-like by default: about 5 minutes first, at most about 67 minutes apart.
- `reconnect`: the one short in-process retry, for a relay connection that dropped
  within a batch.
- `redis_backoff`: how a worker waits for Redis to come back.
"""

from __future__ import annotations

import logging

import tenacity
from tenacity import RetryCallState, Retrying

from drain.settings import Settings

log = logging.getLogger(__name__)


def deferral_wait(settings: Settings) -> tenacity.wait.wait_base:
    return tenacity.wait_exponential_jitter(
        multiplier=settings.retry_first_s,
        max=settings.retry_max_s,
        exp_base=2,
        jitter=settings.retry_first_s * 0.2,
    )


def deferral_delay(settings: Settings, attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (1 for the first failure)."""
    state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(1, attempts)
    return float(deferral_wait(settings)(state))


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("relay connection dropped (%s); reconnecting, attempt %d", exc, state.attempt_number + 1)


def reconnect(exceptions: tuple[type[BaseException], ...]) -> Retrying:
    """One more try, at once, after the relay connection dropped."""
    return Retrying(
        stop=tenacity.stop_after_attempt(2),
        retry=tenacity.retry_if_exception_type(exceptions),
        before_sleep=_log_retry,
        reraise=True,
    )


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
