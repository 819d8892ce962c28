"""Operator actions on tenants: weights, rate and concurrency caps, pauses, and the listing.

Each setting is a field of a Redis hash the claim script reads on every claim, so it holds
for every worker at once. Only a known tenant (mail of it was accepted at least once) can be
set: anything else is refused with ConfigError and nothing changes."""

from __future__ import annotations

from typing import Any, cast

import redis

from drain.errors import ConfigError, InputError
from drain.flow import ratelimit
from drain.ops import audit, pauses
from drain.store import keys, tenancy
from drain.store.store import Store
from drain.worker.dispatch import ensure_tokens

MAX_WEIGHT = 1000


def _known(client: redis.Redis, tenant: str) -> str:
    try:
        tenancy.valid(tenant)
    except InputError as exc:  # the operator's typo, as an unknown name is: a usage error
        raise ConfigError(str(exc)) from None
    if not tenancy.known(client, tenant):
        raise ConfigError(f"unknown tenant {tenant[:80]!a}: no mail of it was ever accepted (see `drain tenant list`)")
    return tenant


def _rejoin(client: redis.Redis, tenant: str) -> None:
    """Ask the claim script to put the tenant back in the rings it has ready mail for."""
    pipe = client.pipeline(transaction=True)
    pipe.zrem(keys.TENANT_WAKE, tenant)
    for lane in keys.LANES:
        pipe.sadd(keys.ring(lane) + ":join", tenant)
    pipe.execute()


def check_weight(weight: int) -> None:
    if not 1 <= weight <= MAX_WEIGHT:
        raise ConfigError(f"--weight must be a whole number from 1 to {MAX_WEIGHT}, got {weight}")


def set_weight(store: Store, tenant: str, weight: int) -> None:
    check_weight(weight)
    client = store.client
    _known(client, tenant)
    if weight == 1:
        client.hdel(keys.TENANT_WEIGHTS, tenant)
    else:
        client.hset(keys.TENANT_WEIGHTS, tenant, weight)


def set_rate(store: Store, tenant: str, per_second: float | None, reason: str = "") -> None:
    """A tenant's rate cap: None lifts it; 0 holds its mail like a pause. Audited, as the
    global and domain rates are."""
    client = store.client
    _known(client, tenant)
    if per_second is None:
        client.hdel(keys.TENANT_RATES, tenant)
    else:
        client.hset(keys.TENANT_RATES, tenant, repr(per_second))
    audit.write(client, "rate-set", store.settings.actor, reason, tenant=tenant,
                rate=ratelimit.format_rate(per_second))
    _rejoin(client, tenant)
    ensure_tokens(client, store.settings)


def set_concurrency(store: Store, tenant: str, most: int) -> None:
    """Most messages of a tenant claimed at once (0 lifts the cap)."""
    client = store.client
    _known(client, tenant)
    if most > 0:
        client.hset(keys.TENANT_CONCURRENCY, tenant, most)
    else:
        client.hdel(keys.TENANT_CONCURRENCY, tenant)
    _rejoin(client, tenant)
    ensure_tokens(client, store.settings)


def pause(store: Store, tenant: str, reason: str = "") -> None:
    """Pause a known tenant's delivery; noted for `drain pause list` and audited, as the
    other pauses are."""
    store.client.sadd(keys.PAUSED_TENANTS, _known(store.client, tenant))
    actor = store.settings.actor
    pauses.note(store.client, pauses.TENANT, tenant, actor, reason, None)
    audit.write(store.client, "pause", actor, reason, scope=pauses.TENANT, name=tenant)


def resume(store: Store, tenant: str, reason: str = "") -> None:
    client = store.client
    client.srem(keys.PAUSED_TENANTS, _known(client, tenant))
    pauses.clear(client, pauses.TENANT, tenant)
    audit.write(client, "resume", store.settings.actor, reason, scope=pauses.TENANT, name=tenant)
    _rejoin(client, tenant)
    ensure_tokens(client, store.settings)


def _hash(client: redis.Redis, key: str) -> dict[str, bytes]:
    found = cast(dict[bytes, bytes], client.hgetall(key))
    return {k.decode("utf-8", "replace"): v for k, v in found.items()}


def listing(store: Store) -> list[dict[str, Any]]:
    """Every known tenant: ready mail per lane, queued mail, weight, caps, paused. Mail an
    operator's action took off a ready lane is not counted, though its id waits on the lane
    until the claim passes it (keys.SWEPT_LANE)."""
    client = store.client
    names = tenancy.names(client)
    pipe = client.pipeline(transaction=True)
    for name in names:
        for lane in keys.LANES:
            pipe.llen(keys.lane(lane, name))
    pipe.hgetall(keys.SWEPT_LANE)
    pipe.smembers(keys.SWEPT)
    *lengths, noted, swept = pipe.execute()
    off = tenancy.swept_off(client, noted, swept)
    queued, weights = _hash(client, keys.TENANT_SHAPE), _hash(client, keys.TENANT_WEIGHTS)
    rates, caps = _hash(client, keys.TENANT_RATES), _hash(client, keys.TENANT_CONCURRENCY)
    paused = {p.decode("utf-8", "replace") for p in client.smembers(keys.PAUSED_TENANTS)}  # type: ignore[union-attr]
    rows = []
    for n, name in enumerate(names):
        fresh = max(0, int(lengths[2 * n]) - off.get(("fresh", name), 0))
        backlog = max(0, int(lengths[2 * n + 1]) - off.get(("backlog", name), 0))
        rows.append({
            "tenant": name, "ready_fresh": fresh, "ready_backlog": backlog,
            "queued": _int(queued.get(name)), "weight": _int(weights.get(name)) or 1,
            "rate": ratelimit.stored_rate(rates.get(name)), "concurrency": _int(caps.get(name)) or None,
            "paused": name in paused,
        })
    return rows


def _int(value: bytes | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0
