"""Adaptive per-domain rates (AIMD): a relay that says "slow down" halves the domain's rate,
success raises it again step by step until the adaptive limit is dropped.

Each change is one atomic step in Redis (adapt.lua), so workers that hear "slow down" and
"ok" for the same domain at once cannot lose each other's change.
"""

from __future__ import annotations

from drain.store import keys
from drain.store.store import Store

# Adaptive rates never drop below this (msgs/s), and recover towards the cap (or the global
# rate, or this ceiling when neither is set) by an additive step at most once a second.
MIN_RATE = 0.5
CEILING = 1000.0
_THROTTLE_HINTS = ("rate", "throttl", "too many", "slow down", "too fast", "4.7.")


def is_throttling(code: int, text: str) -> bool:
    """A reply that says "slow down" rather than "try later": 421, or a 4xx naming a rate."""
    lowered = text.lower()
    return code == 421 or (400 <= code < 500 and any(h in lowered for h in _THROTTLE_HINTS))


def _adapt(store: Store, domain: str, direction: str, now: float) -> bytes | None:
    """The adaptive rate after one step of adapt.lua (as text), None when there is none."""
    reply: bytes | None = store.scripts.adapt(
        keys=[keys.DOMAIN_EFFECTIVE, keys.DOMAIN_RAISED, keys.DOMAIN_RATES, keys.RATE],
        args=[domain, direction, repr(now), repr(MIN_RATE), repr(CEILING)],
    )
    return reply


def throttled(store: Store, domain: str, now: float) -> float:
    """Halve the domain's effective rate (multiplicative decrease), at most once a second;
    returns the rate now in force."""
    return float(_adapt(store, domain, "down", now) or MIN_RATE)  # a decrease always leaves a rate


def recovered(store: Store, domain: str, now: float) -> float | None:
    """After a success, raise a throttled domain's effective rate by a step, at most once a
    second (additive increase); at its ceiling the adaptive limit is dropped. Returns the
    rate, None when the domain no longer adapts."""
    rate = _adapt(store, domain, "up", now)
    return None if rate is None else float(rate)
