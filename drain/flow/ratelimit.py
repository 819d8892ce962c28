"""Delivery rate settings, live for every worker: stored in Redis, read by the claim script.

Rates are written like `500/s`, `30000/m` or `1000000/h`; `unlimited` is the only way to
remove a limit, and 0 (`0`, `0/s`) holds delivery, as a pause does.
"""

from __future__ import annotations

import math
import re

import redis

from drain.errors import ConfigError
from drain.store import keys

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|m|min|h|hour)\s*$", re.IGNORECASE | re.ASCII)
_PER_SECOND = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


# The slowest rate taken (messages per second): one message a day.
SLOWEST = 1 / 86400
# The fastest rate taken: a million messages a second, far past any relay. Above it a rate
# is a typo or a stand-in for 'unlimited' (1e23/s was stored and shown as such).
FASTEST = 1_000_000.0


def parse_rate(text: str) -> float | None:
    """Messages per second from '500/s' style text; None for unlimited; 0.0 holds delivery."""
    if text.strip().lower() == "unlimited":
        return None
    if text.strip() == "0":
        return 0.0
    match = _RATE.match(text)
    per_second = float(match.group(1)) / _PER_SECOND[match.group(2).lower()] if match else math.nan
    if not math.isfinite(per_second):
        raise ConfigError(f"rate must look like 500/s, 30000/m or 1000000/h, 0 to hold delivery, or 'unlimited'"
                          f" to lift the limit; got {text!r}")
    if 0 < per_second < SLOWEST:
        # The rate scripts book send times and keep them in Redis with a lifetime: at a
        # rate of 1e-15/s that lifetime is no longer a number Redis takes, and every claim failed.
        raise ConfigError(f"rate {text.strip()!r} is slower than one message a day; to hold delivery, set 0")
    if per_second > FASTEST:
        raise ConfigError(f"rate {text.strip()[:40]!r} is faster than 1000000/s; to lift the limit, set 'unlimited'")
    return per_second


def stored_rate(raw: bytes | str | None) -> float | None:
    """A rate as stored in Redis: None when absent (unlimited); 0.0 (delivery held) when it is
    0 or cannot be read, as the claim and gate scripts read it."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except (ValueError, UnicodeDecodeError):
        return 0.0
    if math.isinf(value) and value > 0:
        return None
    return value if value > 0 else 0.0


def holds(rate: float | None) -> bool:
    """Whether a rate holds delivery (it is 0)."""
    return rate is not None and rate <= 0


def format_rate(per_second: float | None) -> str:
    if per_second is None:
        return "unlimited"
    if per_second <= 0:
        return "0 (held)"
    if per_second >= 1:
        return f"{per_second:g}/s"
    return f"{per_second * 60:g}/m"


def set_global(client: redis.Redis, per_second: float | None) -> None:
    if per_second is None:
        client.delete(keys.RATE, keys.RATE_STATE)
    else:
        client.set(keys.RATE, repr(per_second))


def get_global(client: redis.Redis) -> float | None:
    """The global rate: None for unlimited, 0.0 while it holds delivery."""
    return stored_rate(client.get(keys.RATE))


def pause(client: redis.Redis, ttl_ms: int | None = None) -> None:
    """Pause delivery, until resumed or for ttl_ms (the flag expires by itself)."""
    client.set(keys.PAUSED, b"1", px=ttl_ms)


def resume(client: redis.Redis) -> None:
    client.delete(keys.PAUSED)


def is_paused(client: redis.Redis) -> bool:
    return bool(client.exists(keys.PAUSED))


# -- per destination domain ---------------------------------------------------------------


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
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"burst must be a finite number of seconds, got {seconds!r}")
    client.set(keys.BURST, repr(seconds))


def pause_domain(client: redis.Redis, domain: str) -> None:
    client.sadd(keys.PAUSED_DOMAINS, domain.lower())


def resume_domain(client: redis.Redis, domain: str) -> None:
    client.srem(keys.PAUSED_DOMAINS, domain.lower())


def _number(value: bytes | None) -> float | None:
    """A stored positive, finite number; None when absent or unreadable."""
    if value is None:
        return None
    try:
        number = float(value)
    except (ValueError, UnicodeDecodeError):
        return None
    return number if math.isfinite(number) and number > 0 else None


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
        cap = stored_rate(rates[key]) if key in rates else None
        adapted = _number(effective.get(key))
        most = _number(concurrency.get(key))
        domains[name] = {
            "rate": cap,
            "effective": round(adapted, 2) if adapted is not None else None,
            "concurrency": int(most) if most is not None else None,
            "paused": key in paused,
            "held": holds(cap),
        }
    global_rate = get_global(client)
    burst_s = _number(burst) if burst != b"0" else 0.0
    return {"global": global_rate, "burst_s": burst_s, "paused": is_paused(client),
            "held": holds(global_rate), "domains": domains}
