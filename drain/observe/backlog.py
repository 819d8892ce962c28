"""The backlog's shape, like Postfix's qshape: queued mail by destination domain and age,
with an ETA per domain from its limits and the recent pace. Read from counters that every
state move keeps (see keys.SHAPE), so it costs the same for ten messages or a million.

The ETAs come from one place, `forecast`, which `drain status`, `drain backlog`, their JSON,
the metrics and the status page all use."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from drain.flow import ratelimit
from drain.flow.breaker import RELAY, Breakers
from drain.store import keys
from drain.store.record import DOMAIN, parse_shape_field
from drain.store.store import Store
from drain.worker import routing

# Lower bounds of the age buckets, in seconds: 0, 5 min, then doubling (as qshape's minutes).
BUCKETS_S = [0, 300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 76800]
# Books samples kept for the history chart (one per housekeeping round that takes one).
HISTORY_KEPT = 2160
HISTORY_EVERY_S = 10.0
# Deferred messages read (those due last, a page at a time, DUE_BUDGET at most) to bound each
# domain's ETA by its next attempts. A domain none of whose deferred mail was among them (on a
# deeper deferred set) has an ETA that is only a lower bound: it says so (eta_at_least).
DUE_PAGE = 500
DUE_BUDGET = 5000

log = logging.getLogger(__name__)


@dataclass
class DomainShape:
    domain: str
    total: int = 0
    by_age: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_S))
    eta_s: float | None = None
    # Why its mail does not move (eta_s is then None): "paused", "breaker open until HH:MM:SS".
    held_by: str | None = None
    # eta_s is a lower bound (in JSON only then, as "eta_at_least": true): deferred mail of this
    # domain may be due later (the deferred set is deeper than DUE_BUDGET, and none of this
    # domain's mail is among those due last).
    eta_at_least: bool = False

    def as_dict(self) -> dict[str, Any]:
        doc = {"domain": self.domain, "total": self.total, "by_age": self.by_age,
               "eta_s": None if self.eta_s is None else round(self.eta_s, 1), "held_by": self.held_by}
        return doc | {"eta_at_least": True} if self.eta_at_least else doc


@dataclass
class Shape:
    domains: list[DomainShape]
    total: int
    # The headline: the longest ETA among domains whose mail moves (None when none moves or
    # the pace is unknown), and what holds the rest back: domain (or "*") -> why.
    eta_s: float | None = None
    held_by: dict[str, str] = field(default_factory=dict)
    # eta_s is a lower bound (a domain whose mail moves has eta_at_least, and mail is held).
    eta_at_least: bool = False

    def as_dict(self) -> dict[str, Any]:
        doc = {"buckets_s": BUCKETS_S, "total": self.total,
               "eta_s": None if self.eta_s is None else round(self.eta_s, 1), "held_by": self.held_by,
               "domains": [d.as_dict() for d in self.domains]}
        return doc | {"eta_at_least": True} if self.eta_at_least else doc


@dataclass(frozen=True)
class Limits:
    """What bounds each domain's pace, read once: caps and adaptive rates (msgs/s), paused
    domains, open breakers (domain -> open until), the global rate and pause, the pace."""

    caps: dict[str, float]
    paused: set[str]
    breakers: dict[str, float]
    global_rate: float | None
    all_paused: bool
    pace: float
    # Domains held by a cap of 0 (not paused): `drain rate set`, not `resume`, lets them go.
    zero: frozenset[str] = frozenset()


def read_limits(store: Store, pace: float | None = None, now: float | None = None) -> Limits:
    now = time.time() if now is None else now
    try:
        shown = ratelimit.show(store.client)
    except redis.ResponseError as exc:  # a settings key of the wrong type: no limits known, keep answering
        log.error("the rate settings cannot be read: %s", exc)
        shown = {"domains": {}, "global": None, "paused": False, "held": False}
    caps: dict[str, float] = {}
    paused: set[str] = set()
    zero: set[str] = set()
    for name, d in cast(dict[str, dict[str, Any]], shown["domains"]).items():
        rates = [float(r) for r in (d.get("rate"), d.get("effective")) if r]
        if rates:
            caps[name] = min(rates)
        if d.get("paused") or d.get("held"):  # a cap of 0 holds the domain like a pause
            paused.add(name)
            if not d.get("paused"):
                zero.add(name)
    try:
        opened = {name: state["open_until"] for name, state in
                  Breakers(store.client, store.settings).states().items() if state.get("open_until", 0) > now}
    except (ValueError, redis.ResponseError) as exc:
        log.error("the circuit breaker states cannot be read: %s", exc)
        opened = {}
    if any(name not in opened for name in routing.default_names(store.settings)):
        opened.pop(RELAY, None)  # a fallback of the environment's relay still takes its mail
    return Limits(caps, paused, opened, cast(float | None, shown["global"]),
                  bool(shown["paused"]) or bool(shown.get("held")), store.pace() if pace is None else pace,
                  frozenset(zero))


def _until(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def forecast(totals: dict[str, int], limits: Limits) -> tuple[dict[str, float | None], dict[str, str]]:
    """Seconds until each domain's queued mail is gone, and why mail that does not move is held.

    A domain moves at the lowest of its cap, its adaptive (throttled) rate and the share of
    the global throughput it gets. The throughput is the slower of the global rate, when one
    is set, and the recent pace, when one was measured. Capped domains take their cap (or
    less, when the throughput is short); uncapped domains share what is left in proportion
    to what they have queued, so they end together. When a capped domain is done, its part
    goes to the others: the forecast walks those moments one by one. Paused domains, and
    those behind an open breaker, are held: no number, a reason instead (they take no share
    meanwhile).
    """
    held: dict[str, str] = {}
    relay_open = limits.breakers.get("(relay)")
    for domain, count in totals.items():
        if count <= 0:
            continue
        if limits.all_paused:
            held["*"] = "delivery paused"
        elif domain in limits.paused:
            held[domain] = "rate 0" if domain in limits.zero else "paused"
        elif domain in limits.breakers:
            held[domain] = f"breaker open until {_until(limits.breakers[domain])}"
        elif relay_open is not None:
            held["*"] = f"relay breaker open until {_until(relay_open)}"
    etas: dict[str, float | None] = {d: None for d in totals}
    if "*" in held:
        return etas, held
    left = {d: float(n) for d, n in totals.items() if n > 0 and d not in held}
    for domain in totals:
        if totals[domain] <= 0:
            etas[domain] = 0.0
    capped = {d for d in left if d in limits.caps}
    throughput = limits.global_rate or 0.0
    if not throughput:
        # No global rate: what we did lately. Capped domains still get their caps (the
        # pace may have been measured while little else had mail).
        throughput = limits.pace
    elif limits.pace > 0:
        # A global rate is a ceiling, not a promise: delivery measured slower (a slow relay,
        # few workers) is what the mail will get.
        throughput = min(throughput, limits.pace)
    clock = 0.0
    while left:
        free = [d for d in left if d not in capped]
        cap_sum = sum(limits.caps[d] for d in left if d in capped)
        # When the caps alone ask for more than the global rate, they share it.
        scale = throughput / cap_sum if limits.global_rate and cap_sum > throughput else 1.0
        rates = {d: limits.caps[d] * scale for d in left if d in capped}
        rest = max(0.0, throughput - sum(rates.values()))
        if free and not limits.global_rate:
            # The pace is a floor of what uncapped mail gets (it was measured with it flowing).
            queued_free = sum(left[d] for d in free)
            rest = max(rest, limits.pace * queued_free / sum(left.values()))
        if free:
            queued_free = sum(left[d] for d in free)
            for d in free:
                rates[d] = rest * left[d] / queued_free
        moving = {d: r for d, r in rates.items() if r > 0}
        if not moving:
            break  # nothing known to move (no pace yet, no rate): no figure
        step = min(left[d] / r for d, r in moving.items())
        clock += step
        for d, r in moving.items():
            left[d] -= r * step
            if left[d] <= 1e-6:
                etas[d] = clock
        left = {d: n for d, n in left.items() if n > 1e-6}
    return etas, held


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
    try:
        raw = cast(dict[bytes, bytes], store.client.hgetall(keys.SHAPE))
    except redis.ResponseError as exc:  # a key of the wrong type: no shape, no ETA, and why
        log.error("the backlog shape %s cannot be read: %s", keys.SHAPE, exc)
        return Shape([], 0, None, {"*": "backlog shape unreadable (see the log)"})
    domains: dict[str, DomainShape] = {}
    for key, value in raw.items():
        parsed = parse_shape_field(key.decode("utf-8", "replace"))
        try:
            count = int(value)
        except ValueError:  # damaged or planted: that field is left out (and said), not the backlog
            log.error("a count in %s is not a number: %r; left out", keys.SHAPE, value[:40])
            continue
        if count <= 0 or parsed is None:
            continue
        domain, minute = parsed
        entry = domains.setdefault(domain or "(none)", DomainShape(domain or "(none)"))
        entry.total += count
        entry.by_age[_bucket(now - minute * 60)] += count
    total = sum(d.total for d in domains.values())
    etas, held = forecast({d.domain: d.total for d in domains.values()}, read_limits(store, pace, now))
    due, last_due, complete = _last_due(store, now)
    for entry in domains.values():
        eta = etas.get(entry.domain)
        # Deferred mail goes no sooner than its next attempt: the domain's last one due bounds its ETA.
        entry.eta_s = None if eta is None else max(eta, due.get(entry.domain, 0.0))
        entry.eta_at_least = entry.eta_s is not None and not complete and entry.domain not in due
        entry.held_by = held.get(entry.domain) or held.get("*")
    ordered = sorted(domains.values(), key=lambda d: (-d.total, d.domain))
    at_least = False
    unknown = "*" in held or any(etas.get(d.domain) is None for d in ordered if d.domain not in held)
    headline = None if unknown else max((e for e in etas.values() if e is not None), default=0.0)
    if ordered and "*" not in held and all(d.domain in held for d in ordered):
        # Every queued message is held: no figure (0 s would read as done); held_by says why.
        headline = None
    elif headline is not None:
        # The last deferred message due bounds the ETA (of the mail that moves, when some is held).
        headline = max(headline, last_due if not held else max(
            (due.get(d.domain, 0.0) for d in ordered if d.domain not in held), default=0.0))
        at_least = bool(held) and any(d.eta_at_least for d in ordered if d.domain not in held)
    # Tenants: all the mail theirs and held, no number; capped ones take at least their time.
    tenant_held, floor = tenant_limits(store, total)
    if tenant_held and "*" not in held:
        held["*"] = tenant_held
        headline = None
    elif headline is not None:
        headline = max(headline, floor)
    return Shape(ordered, total, headline, held, headline is not None and at_least)


def _last_due(store: Store, now: float) -> tuple[dict[str, float], float, bool]:
    """Seconds until the deferred messages due last are due: by domain, for the domains among
    those read (exact for those: each domain's first one read is its last), overall, and
    whether the whole deferred set was read. It is read from its end a page at a time, up to
    DUE_BUDGET messages (a ZREVRANGE and a page of HGETs each): bounded at any depth."""
    by_domain: dict[str, float] = {}
    overall = 0.0
    for start in range(0, DUE_BUDGET, DUE_PAGE):
        try:
            page = cast(list[tuple[bytes, float]], store.client.zrevrange(keys.DEFERRED, start, start + DUE_PAGE - 1,
                                                                          withscores=True))
        except redis.ResponseError as exc:
            log.error("the deferred set cannot be read: %s", exc)
            return by_domain, overall, False
        if start == 0 and page:
            overall = max(0.0, page[0][1] - now)
        pipe = store.client.pipeline(transaction=False)
        for member, _score in page:
            pipe.hget(keys.message(member.decode("utf-8", "replace")), DOMAIN)
        for (_member, score), domain in zip(page, pipe.execute() if page else [], strict=True):
            name = domain.decode("utf-8", "replace") if isinstance(domain, bytes) and domain else "(none)"
            by_domain.setdefault(name, max(0.0, score - now))
        if len(page) < DUE_PAGE:
            return by_domain, overall, True
    return by_domain, overall, False


def tenant_limits(store: Store, queued: int) -> tuple[str | None, float]:
    """What tenants do to the ETA: why nothing moves when all queued mail is of tenants that
    are paused or at a rate of 0 (else None), and the least time the capped tenants' mail
    needs at their caps (0.0 when none is capped). A damaged key reads as no limit, logged."""
    try:
        pipe = store.client.pipeline(transaction=False)
        pipe.hgetall(keys.TENANT_SHAPE)
        pipe.smembers(keys.PAUSED_TENANTS)
        pipe.hgetall(keys.TENANT_RATES)
        shape, paused, rates = cast(tuple[dict[bytes, bytes], set[bytes], dict[bytes, bytes]], pipe.execute())
    except redis.ResponseError as exc:
        log.error("the tenant limits cannot be read: %s", exc)
        return None, 0.0
    held: list[str] = []
    held_mail, floor = 0, 0.0
    for name, value in shape.items():
        try:
            count = int(value)
        except ValueError:
            continue
        if count <= 0:
            continue
        rate = ratelimit.stored_rate(rates.get(name))
        if name in paused or ratelimit.holds(rate):
            held.append(f"{name.decode('utf-8', 'replace')} ({'paused' if name in paused else 'rate 0'})")
            held_mail += count
        elif rate is not None:
            floor = max(floor, count / rate)
    if held and held_mail >= queued:
        names = ", ".join(sorted(held)[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        return f"tenant{'s' if len(held) > 1 else ''} held: {names}", floor
    return None, floor


def sample_history(store: Store, now: float | None = None) -> bool:
    """Add a books sample for the chart if the last one is older than HISTORY_EVERY_S."""
    now = time.time() if now is None else now
    last = _samples([cast(bytes | None, store.client.lindex(keys.HISTORY, 0))])
    if last and now - last[0]["t"] < HISTORY_EVERY_S:
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
    try:
        samples = _samples(cast(list[bytes], store.client.lrange(keys.HISTORY, 0, HISTORY_KEPT - 1)))
    except redis.ResponseError as exc:
        log.error("the books samples cannot be read: %s", exc)
        return []
    return [s for s in reversed(samples) if now - s["t"] <= since_s]


def _samples(raw: Sequence[bytes | None]) -> list[dict[str, Any]]:
    """The readable books samples: JSON objects with a finite time "t" and numeric counts
    (a damaged or planted one is left out, not the chart)."""
    out: list[dict[str, Any]] = []
    for item in raw:
        try:
            sample = json.loads(item) if item is not None else None
        except ValueError:
            continue
        if (isinstance(sample, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             and math.isfinite(v) for v in sample.values())
                and "t" in sample):
            out.append(sample)
    return out
