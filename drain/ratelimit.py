"""Delivery rate settings, live for every worker: stored in Redis, read by the claim script.

Rates are written like `500/s`, `30000/m` or `1000000/h`; `unlimited` (or 0) removes a limit.
"""

from __future__ import annotations

import re

import redis

from drain import keys
from drain.errors import ConfigError

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|m|min|h|hour)\s*$", re.IGNORECASE)
_PER_SECOND = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str) -> float | None:
    """Messages per second from '500/s' style text; None for unlimited."""
    if text.strip().lower() in {"unlimited", "none", "off", "0"}:
        return None
    match = _RATE.match(text)
    if not match:
        raise ConfigError(f"rate must look like 500/s, 30000/m or 1000000/h (or 'unlimited'), got {text!r}")
    per_second = float(match.group(1)) / _PER_SECOND[match.group(2).lower()]
    if per_second <= 0:
        return None
    return per_second


def format_rate(per_second: float | None) -> str:
    if per_second is None:
        return "unlimited"
    if per_second >= 1:
        return f"{per_second:g}/s"
    return f"{per_second * 60:g}/m"


def set_global(client: redis.Redis, per_second: float | None) -> None:
    if per_second is None:
        client.delete(keys.RATE, keys.RATE_STATE)
    else:
        client.set(keys.RATE, repr(per_second))


def get_global(client: redis.Redis) -> float | None:
    raw = client.get(keys.RATE)
    if raw is None:
        return None
    value = float(raw)
    return value if value > 0 else None


def pause(client: redis.Redis) -> None:
    client.set(keys.PAUSED, b"1")


def resume(client: redis.Redis) -> None:
    client.delete(keys.PAUSED)


def is_paused(client: redis.Redis) -> bool:
    return bool(client.exists(keys.PAUSED))


# -- per destination domain ---------------------------------------------------------------

# Adaptive rates never drop below this (msgs/s), and recover towards the cap (or the global
# rate, or this ceiling when neither is set) by an additive step at most once a second.
MIN_RATE = 0.5
CEILING = 1000.0
_THROTTLE_HINTS = ("rate", "throttl", "too many", "slow down", "too fast", "4.7.")


def set_domain(client: redis.Redis, domain: str, per_second: float | None) -> None:
    domain = domain.lower()
    if per_second is None:
        client.hdel(keys.DOMAIN_RATES, domain)
    else:
        client.hset(keys.DOMAIN_RATES, domain, repr(per_second))


def set_concurrency(client: redis.Redis, domain: str, limit: int | None) -> None:
    domain = domain.lower()
    if limit:
        client.hset(keys.DOMAIN_CONCURRENCY, domain, limit)
    else:
        client.hdel(keys.DOMAIN_CONCURRENCY, domain)


def set_burst(client: redis.Redis, seconds: float) -> None:
    client.set(keys.BURST, repr(seconds))


def pause_domain(client: redis.Redis, domain: str) -> None:
    client.sadd(keys.PAUSED_DOMAINS, domain.lower())


def resume_domain(client: redis.Redis, domain: str) -> None:
    client.srem(keys.PAUSED_DOMAINS, domain.lower())


def is_throttling(code: int, text: str) -> bool:
    """A reply that says "slow down" rather than "try later": 421, or a 4xx naming a rate."""
    lowered = text.lower()
    return code == 421 or (400 <= code < 500 and any(h in lowered for h in _THROTTLE_HINTS))


def _floats(values: list[bytes | None]) -> list[float | None]:
    return [float(v) if v is not None else None for v in values]


def throttled(client: redis.Redis, domain: str, now: float) -> float:
    """Halve the domain's effective rate (multiplicative decrease), at most once a second;
    returns the rate now in force."""
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys.DOMAIN_EFFECTIVE, domain)
    pipe.hget(keys.DOMAIN_RATES, domain)
    pipe.get(keys.RATE)
    pipe.hget(keys.DOMAIN_RAISED, domain)
    effective, cap, global_rate, changed = _floats(pipe.execute())
    if effective is not None and changed is not None and now - changed < 1.0:
        return effective
    start = effective or cap or global_rate or CEILING
    new = max(MIN_RATE, start / 2)
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.DOMAIN_EFFECTIVE, domain, repr(new))
    pipe.hset(keys.DOMAIN_RAISED, domain, repr(now))
    pipe.execute()
    return new


def recovered(client: redis.Redis, domain: str, now: float) -> float | None:
    """After a success, raise a throttled domain's effective rate by a step, at most once a
    second (additive increase); at its ceiling the adaptive limit is dropped. Returns the rate."""
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys.DOMAIN_EFFECTIVE, domain)
    pipe.hget(keys.DOMAIN_RAISED, domain)
    pipe.hget(keys.DOMAIN_RATES, domain)
    pipe.get(keys.RATE)
    effective, raised, cap, global_rate = _floats(pipe.execute())
    if effective is None:
        return None
    if raised is not None and now - raised < 1.0:
        return effective
    ceiling = cap or global_rate or CEILING
    new = effective + max(1.0, ceiling * 0.05)
    pipe = client.pipeline(transaction=True)
    if new >= ceiling:
        pipe.hdel(keys.DOMAIN_EFFECTIVE, domain)
        pipe.hdel(keys.DOMAIN_RAISED, domain)
    else:
        pipe.hset(keys.DOMAIN_EFFECTIVE, domain, repr(new))
        pipe.hset(keys.DOMAIN_RAISED, domain, repr(now))
    pipe.execute()
    return None if new >= ceiling else new


def constrained(client: redis.Redis) -> tuple[set[str], set[str], set[str]]:
    """(domains with any limit, pause or adaptive rate; domains with a concurrency cap;
    domains with an adaptive rate), read in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.hkeys(keys.DOMAIN_RATES)
    pipe.hkeys(keys.DOMAIN_EFFECTIVE)
    pipe.hkeys(keys.DOMAIN_CONCURRENCY)
    pipe.smembers(keys.PAUSED_DOMAINS)
    rates, effective, concurrency, paused = ({v.decode() for v in r} for r in pipe.execute())
    return rates | effective | concurrency | paused, concurrency, effective


def show(client: redis.Redis) -> dict[str, object]:
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.DOMAIN_RATES)
    pipe.hgetall(keys.DOMAIN_EFFECTIVE)
    pipe.hgetall(keys.DOMAIN_CONCURRENCY)
    pipe.smembers(keys.PAUSED_DOMAINS)
    pipe.get(keys.BURST)
    rates, effective, concurrency, paused, burst = pipe.execute()
    names = {k.decode() for k in [*rates, *effective, *concurrency, *paused]}
    domains: dict[str, dict[str, object]] = {}
    for name in sorted(names):
        key = name.encode()
        domains[name] = {
            "rate": float(rates[key]) if key in rates else None,
            "effective": round(float(effective[key]), 2) if key in effective else None,
            "concurrency": int(concurrency[key]) if key in concurrency else None,
            "paused": key in paused,
        }
    return {"global": get_global(client), "burst_s": float(burst) if burst else None,
            "paused": is_paused(client), "domains": domains}
