"""Reading the counts of the states: the books (one consistent snapshot), the delivery pace,
and the age of the oldest waiting message. Reads only: every move is in `Store`."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis
from redis.exceptions import OutOfMemoryError

from drain.store import keys, record

log = logging.getLogger(__name__)

# Pace samples kept (one per housekeeping round, about one a second).
PACE_KEPT = 900
# Tenants of each lane's ring whose oldest ready message `oldest_age_s` looks at.
HEADS_LOOKED_AT = 100


@dataclass(frozen=True)
class Books:
    """How many messages are in each state; the books balance when they add up to what was accepted."""

    accepted: int
    ready: int
    deferred: int
    in_flight: int
    delivered: int
    bounced: int
    quarantined: int
    deleted: int

    @property
    def balanced(self) -> bool:
        return self.accepted == (
            self.ready
            + self.deferred
            + self.in_flight
            + self.delivered
            + self.bounced
            + self.quarantined
            + self.deleted
        )

    @property
    def queued(self) -> int:
        """Messages still to be worked: ready, deferred or in flight."""
        return self.ready + self.deferred + self.in_flight

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _count(key: str, value: bytes | None) -> int:
    """A counter of the books; 0 (logged) when it is not a whole number."""
    try:
        return int(value or 0)
    except ValueError:
        log.error("a counter in %s is not a number: %s; read as 0", key, record.shown(value or b""))
        return 0


COUNTERS = ["accepted", "delivered", "bounced", "deleted", "parked"]


def read(client: redis.Redis) -> Books:
    """One consistent snapshot (MULTI/EXEC, or one read-only script while Redis is full)."""
    pipe = client.pipeline(transaction=True)
    pipe.hmget(keys.BOOKS, COUNTERS)
    pipe.hmget(keys.READY_COUNT, list(keys.LANES))
    for key in keys.LEGACY_READY:  # ready mail of a drain from before tenants, until adopted
        pipe.llen(key)
    pipe.llen(keys.SUSPECT)
    pipe.scard(keys.SWEPT)
    pipe.zcard(keys.DEFERRED)
    pipe.hlen(keys.INFLIGHT)
    pipe.zcard(keys.QUARANTINE)
    # A key of the wrong type or a counter that is not a number (damaged or planted data)
    # reads as 0 and is logged: the books then show it by not balancing.
    try:
        replies = [0 if isinstance(r, redis.ResponseError) else r for r in pipe.execute(raise_on_error=False)]
    except OutOfMemoryError:  # over maxmemory, Redis queues nothing in MULTI, not even reads
        replies = _read_by_script(client)
    counters, lanes, legacy, legacy_fresh, suspect, swept, deferred, in_flight, quarantined = replies
    counters = counters if isinstance(counters, list) else [None] * 5
    lanes = lanes if isinstance(lanes, list) else [None] * 2
    accepted, delivered, bounced, deleted, parked = (_count(keys.BOOKS, c) for c in counters)
    return Books(
        accepted=accepted,
        ready=sum(_count(keys.READY_COUNT, c) for c in lanes) + int(legacy) + int(legacy_fresh)
        + int(suspect) + parked - int(swept),
        deferred=int(deferred),
        in_flight=int(in_flight),
        delivered=delivered,
        bounced=bounced,
        quarantined=int(quarantined),
        deleted=deleted,
    )


def _read_by_script(client: redis.Redis) -> list[Any]:
    from drain.store.scripts import source

    script = client.register_script(source("books"))
    counters, lanes, *counts = script(keys=[keys.BOOKS, keys.READY_COUNT, *keys.LEGACY_READY, keys.SUSPECT,
                                            keys.SWEPT, keys.DEFERRED, keys.INFLIGHT, keys.QUARANTINE],
                                      args=[*keys.LANES, *COUNTERS])
    return [counters if isinstance(counters, list) and len(counters) == len(COUNTERS) else None,
            lanes if isinstance(lanes, list) and len(lanes) == len(keys.LANES) else None, *counts]


def sample_pace(client: redis.Redis, books: Books) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.lpush(keys.PACE, f"{time.time():.3f} {books.delivered}")
    pipe.ltrim(keys.PACE, 0, PACE_KEPT - 1)
    pipe.execute()


def pace(client: redis.Redis, window_s: float = 30.0) -> float:
    """Delivered messages per second over about the last window_s seconds."""
    samples: list[tuple[float, int]] = []
    try:
        for sample in client.lrange(keys.PACE, 0, PACE_KEPT - 1):
            when, done = text(sample).split()
            if math.isfinite(float(when)):
                samples.append((float(when), int(done)))
    except (ValueError, redis.ResponseError) as exc:  # damaged samples: no pace rather than no status
        log.error("the pace samples in %s cannot be read (%s); pace shown as 0", keys.PACE, exc)
        return 0.0
    if len(samples) < 2:
        return 0.0
    newest_t, newest_n = float(samples[0][0]), int(samples[0][1])
    if time.time() - newest_t > max(window_s, 10.0):
        return 0.0
    then_t, then_n = newest_t, newest_n
    for t, n in samples[1:]:
        then_t, then_n = float(t), int(n)
        if newest_t - then_t >= window_s:
            break
    dt = newest_t - then_t
    return max(0.0, (newest_n - then_n) / dt) if dt > 0 else 0.0


def oldest_age_s(client: redis.Redis, now: float | None = None) -> float:
    """Age of the oldest message still to be worked: the heads of the first tenants of each
    lane's ring (a bounded look: with many tenants it can miss an older head further round the
    ring), the suspects' head, the earliest deferred, and both ends of each domain's parked
    list (fresh mail is parked ahead of backlog mail, so the oldest may be at either end)."""
    now = time.time() if now is None else now
    ids: list[str] = []
    try:
        parked = client.smembers(keys.PARKED_DOMAINS)
    except redis.ResponseError:  # a damaged key: the parked mail's age is not shown, the rest is
        parked = set()
    pipe = client.pipeline(transaction=False)
    pipe.lindex(keys.SUSPECT, 0)
    for lane in keys.LANES:
        # The tenants first in the ring, and some of those still asking to join it.
        tenants = {*cast(list[bytes], client.lrange(keys.ring(lane), 0, HEADS_LOOKED_AT - 1)),
                   *cast(list[bytes], client.srandmember(keys.ring(lane) + ":join", HEADS_LOOKED_AT))}
        for tenant in tenants:
            pipe.lindex(keys.lane(lane, text(tenant)), 0)
    pipe.zrange(keys.DEFERRED, 0, 9)
    for domain in parked if isinstance(parked, set) else ():
        pipe.lindex(keys.parked(text(domain)), 0)
        pipe.lindex(keys.parked(text(domain)), -1)
    for reply in pipe.execute(raise_on_error=False):
        if isinstance(reply, bytes):
            ids.append(text(reply))
        elif isinstance(reply, list):
            ids.extend(map(text, reply))
    # A damaged time (or key) is passed over here; the worker that claims it quarantines it.
    candidates = [r.accepted_at for r in record.fetch(client, ids, (record.ACCEPTED,))
                  if r is not None and not r.unreadable and r.accepted_at > 0]
    return max(0.0, now - min(candidates)) if candidates else 0.0


def ask_places(pipe: redis.client.Pipeline, msg_id: str) -> None:
    """Queue on `pipe` the reads that say where one message is, in this order: its owner in
    the in-flight hash, its scores in the quarantine, deferred, held-for-rate and
    held-by-a-breaker sets, and whether the swept set names it (six replies). The rest of
    where it can be (its ready lanes, a parked list) the caller asks as it needs."""
    pipe.hget(keys.INFLIGHT, msg_id)
    pipe.zscore(keys.QUARANTINE, msg_id)
    pipe.zscore(keys.DEFERRED, msg_id)
    pipe.zscore(keys.HELD_RATE, msg_id)
    pipe.zscore(keys.HELD_BREAKER, msg_id)
    pipe.sismember(keys.SWEPT, msg_id)
