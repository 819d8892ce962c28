"""Intake pause: while the flag is set, the SMTP ingress answers 421 and clients keep their mail.

Delivery is not affected (that is `drain pause`), and neither is the Python API.
"""

from __future__ import annotations

import redis

from drain.store import keys


def pause(client: redis.Redis, ttl_ms: int | None = None) -> None:
    """Close intake, until resumed or for ttl_ms (the flag expires by itself)."""
    client.set(keys.INTAKE_PAUSED, b"1", px=ttl_ms)


def resume(client: redis.Redis) -> None:
    client.delete(keys.INTAKE_PAUSED)


def is_paused(client: redis.Redis) -> bool:
    return bool(client.exists(keys.INTAKE_PAUSED))
