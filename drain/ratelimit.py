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
