"""Tenants: who a message belongs to, and the per-tenant ready lists and rings it waits on.

A tenant is any name of 1 to 128 printable characters without spaces. A tenant is known
once mail of it has been accepted (it is then in keys.TENANTS): weights and caps may only be
set for known tenants, so a typo is refused rather than stored for nobody.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import cast

import redis

from drain.errors import InputError
from drain.store import keys

MAX_LEN = 128
# A message whose sender has no domain (a bounce, <>) belongs to this tenant.
NO_SENDER = "-"


def valid(name: str) -> str:
    """The tenant name, or InputError when it cannot be one."""
    if not isinstance(name, str):  # tenant=5 from the API raised len()'s TypeError
        raise InputError(f"tenant must be text, got {type(name).__name__}")
    # Of the white space characters only the space is printable.
    if not 0 < len(name) <= MAX_LEN or not name.isprintable() or " " in name:
        raise InputError(f"tenant must be 1 to {MAX_LEN} printable characters without spaces: {name[:40]!a}")
    return name


@functools.lru_cache(maxsize=4096)  # a batch's senders come back message after message
def from_sender(sender: str) -> str:
    """The fallback tenant: the sender's domain (lower case), or NO_SENDER."""
    domain = sender.rpartition("@")[2].strip().lower() if "@" in sender else ""
    try:
        return valid(domain)
    except InputError:
        return NO_SENDER


def known(client: redis.Redis, tenant: str) -> bool:
    return bool(client.sismember(keys.TENANTS, tenant))


def names(client: redis.Redis) -> list[str]:
    return sorted(m.decode("utf-8", "replace") for m in client.smembers(keys.TENANTS))  # type: ignore[union-attr]


def ready_ids(client: redis.Redis, lane: str) -> list[str]:
    """Every ready id of one lane, tenant by tenant (for operators' tools and tests; costs
    the whole lane)."""
    pipe = client.pipeline(transaction=True)
    for tenant in names(client):
        pipe.lrange(keys.lane(lane, tenant), 0, -1)
    pipe.lrange(keys.lane(lane, ""), 0, -1)
    return [i.decode() for chunk in pipe.execute() for i in chunk]


def swept_off(client: redis.Redis, noted: dict[bytes, bytes], swept: set[bytes]) -> Counter[tuple[str, str]]:
    """How many ids on each (lane, tenant) ready list an operator's action took away and the
    claim has not passed yet, from the swept-lanes hash and the swept set read together.
    Notes of ids the claim has passed are stale: dropped (checked again under WATCH, so a
    note an action writes meanwhile stays)."""
    off: Counter[tuple[str, str]] = Counter()
    stale = []
    for msg_id, where in noted.items():
        if msg_id not in swept:
            stale.append(msg_id)
            continue
        lane, _sep, tenant = where.decode("utf-8", "replace").partition("|")
        off[(lane, tenant)] += 1
    if stale:
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.SWEPT_LANE, keys.SWEPT)  # type: ignore[no-untyped-call]
                still = cast(list[int], pipe.smismember(keys.SWEPT, stale))
                gone = [i for i, s in zip(stale, still, strict=True) if not s]
                if gone:
                    pipe.multi()
                    pipe.hdel(keys.SWEPT_LANE, *gone)
                    pipe.execute()
            except (redis.WatchError, redis.ResponseError):
                pass  # an action moved meanwhile, or a read-only (viewer) user: a later listing tidies
    return off
