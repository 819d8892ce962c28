"""The backlog's shape, like Postfix's qshape: queued mail by destination domain and age,
with an ETA per domain from its limits and the recent pace. Read from counters that every
state move keeps (see keys.SHAPE), so it costs the same for ten messages or a million."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

from drain import keys, ratelimit
from drain.store import Store

# Lower bounds of the age buckets, in seconds: 0, 5 min, then doubling (as qshape's minutes).
BUCKETS_S = [0, 300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 76800]
# Books samples kept for the history chart (one per housekeeping round that takes one).
HISTORY_KEPT = 2160
HISTORY_EVERY_S = 10.0


@dataclass
class DomainShape:
    domain: str
    total: int = 0
    by_age: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_S))
    eta_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "total": self.total, "by_age": self.by_age,
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1)}


@dataclass
class Shape:
    domains: list[DomainShape]
    total: int

    def as_dict(self) -> dict[str, Any]:
        return {"buckets_s": BUCKETS_S, "total": self.total, "domains": [d.as_dict() for d in self.domains]}


def _bucket(age_s: float) -> int:
    index = 0
    for i, lower in enumerate(BUCKETS_S):
        if age_s >= lower:
            index = i
    return index


def shape(store: Store, now: float | None = None, pace: float | None = None) -> Shape:
    """Queued mail (ready, deferred, in flight) by domain and age, largest domain first.

    A domain's ETA is its total over the pace it can get: the recent overall pace shared
    in proportion to its part of the backlog, capped by the domain's own (or adaptive) rate.
    """
    now = time.time() if now is None else now
    raw = cast(dict[bytes, bytes], store.client.hgetall(keys.SHAPE))
    domains: dict[str, DomainShape] = {}
    for key, value in raw.items():
        domain, _sep, minute = key.decode().rpartition("|")
        count = int(value)
        if count <= 0 or not minute.isdigit():
            continue
        entry = domains.setdefault(domain or "(none)", DomainShape(domain or "(none)"))
        entry.total += count
        entry.by_age[_bucket(now - int(minute) * 60)] += count
    total = sum(d.total for d in domains.values())
    pace = store.pace() if pace is None else pace
    if pace <= 0:
        pace = ratelimit.get_global(store.client) or 0.0
    limits = cast(dict[str, Any], ratelimit.show(store.client)["domains"])
    for entry in domains.values():
        share = pace * entry.total / total if total else 0.0
        cap = limits.get(entry.domain, {})
        # A limits entry with no rate (paused, concurrency only) and no pace: no figure, not a crash.
        rates = [r for r in (cap.get("rate"), cap.get("effective"), share or None) if r]
        own = min(rates, default=None) if cap else share
        entry.eta_s = entry.total / own if own else None
    ordered = sorted(domains.values(), key=lambda d: (-d.total, d.domain))
    return Shape(ordered, total)


def sample_history(store: Store, now: float | None = None) -> bool:
    """Add a books sample for the chart if the last one is older than HISTORY_EVERY_S."""
    now = time.time() if now is None else now
    last = store.client.lindex(keys.HISTORY, 0)
    if last is not None and now - float(json.loads(last)["t"]) < HISTORY_EVERY_S:
        return False
    books = store.books()
    sample = {"t": round(now, 1), "queued": books.queued, "ready": books.ready, "deferred": books.deferred,
              "delivered": books.delivered, "quarantined": books.quarantined, "bounced": books.bounced}
    pipe = store.client.pipeline(transaction=False)
    pipe.lpush(keys.HISTORY, json.dumps(sample))
    pipe.ltrim(keys.HISTORY, 0, HISTORY_KEPT - 1)
    pipe.execute()
    return True


def history(store: Store, since_s: float = 6 * 3600, now: float | None = None) -> list[dict[str, Any]]:
    """Books samples of the last since_s seconds, oldest first."""
    now = time.time() if now is None else now
    samples = [json.loads(s) for s in cast(list[bytes], store.client.lrange(keys.HISTORY, 0, HISTORY_KEPT - 1))]
    return [s for s in reversed(samples) if now - s["t"] <= since_s]
