"""The books plus the pace: what `drain status` shows. The ETA and what holds mail back come
from backlog.forecast, the one function the backlog view and the status page use too."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from drain.flow import ratelimit
from drain.flow.breaker import Breakers
from drain.observe import backlog
from drain.observe.deferred import deferred_by
from drain.settings import Settings
from drain.store import embedded, keys
from drain.store.store import Books, Store
from drain.worker import routing


@dataclass(frozen=True)
class Status:
    """What `drain status` and the status page report: the books, pace, and what holds mail back."""

    books: Books
    oldest_age_s: float
    rate_per_s: float
    # The longest ETA among domains whose mail moves (None: unknown, or all is held).
    eta_s: float | None
    breakers_open: list[str] = field(default_factory=list)
    # What holds queued mail back: domain (or "*" for all) -> why.
    held_by: dict[str, str] = field(default_factory=dict)
    # The deferred count split by why: held for rate, held by a breaker, deferred by the relay.
    deferred_by: dict[str, int] = field(default_factory=dict)
    # Why delivery is held as a whole ("paused", "rate 0"), or None while it runs.
    held: str | None = None
    # Destination domains whose cap is 0 (their mail is held).
    domains_held: list[str] = field(default_factory=list)
    # Every relay drain knows of, by name: handed, failed (no session), concurrency, open, open_until.
    relays: dict[str, dict[str, object]] = field(default_factory=dict)
    # The tenants with the most queued mail (name, queued), largest first, and how many
    # tenants have queued mail; paused tenants.
    tenants: list[tuple[str, int]] = field(default_factory=list)
    tenants_queued: int = 0
    tenants_paused: list[str] = field(default_factory=list)
    # eta_s is a lower bound: some of the moving mail is deferred deeper than was read
    # (backlog.Shape.eta_at_least); in JSON only then, as "eta_at_least": true.
    eta_at_least: bool = False

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = self.books.as_dict()
        out["deferred_by"] = self.deferred_by
        out["oldest_age_s"] = round(self.oldest_age_s, 3)
        out["rate_per_s"] = round(self.rate_per_s, 2)
        out["eta_s"] = None if self.eta_s is None else round(self.eta_s, 1)
        out["held_by"] = self.held_by
        out["breakers_open"] = self.breakers_open
        out["delivery_held"] = self.held
        out["domains_held"] = self.domains_held
        out["relays"] = self.relays
        out["tenants"] = [{"tenant": name, "queued": queued} for name, queued in self.tenants]
        out["tenants_queued"] = self.tenants_queued
        out["tenants_paused"] = self.tenants_paused
        if self.eta_at_least:
            out["eta_at_least"] = True
        return out


log = logging.getLogger(__name__)
# Tenants named in the status (by queued mail, largest first).
TENANTS_SHOWN = 10


def _held(store: Store) -> tuple[str | None, list[str]]:
    """Why delivery is held, and which domains are held at a cap of 0."""
    try:
        limits = ratelimit.show(store.client)
    except redis.ResponseError as exc:  # a settings key of the wrong type: say so, keep answering
        log.error("the rate settings cannot be read: %s", exc)
        return "rate settings unreadable", []
    domains = limits["domains"]
    held = sorted(name for name, d in domains.items() if d["held"]) if isinstance(domains, dict) else []
    if limits["paused"]:
        return "paused", held
    if limits["held"]:
        return "rate 0", held
    return None, held


def read(store: Store, shape: backlog.Shape | None = None) -> Status:
    books = store.books()
    rate = store.pace()
    held, domains_held = _held(store)
    shape = backlog.shape(store, pace=rate) if shape is None else shape
    held_by = dict(shape.held_by)
    if books.queued == 0:
        eta: float | None = 0.0
    elif held is not None:
        eta = None
        held_by["*"] = "delivery paused" if held == "paused" else f"delivery held ({held})"
    else:
        eta = shape.eta_s
    now = time.time()
    try:
        opened = [d for d, state in Breakers(store.client, store.settings).states().items()
                  if state.get("open_until", 0) > now]
    except (ValueError, redis.ResponseError) as exc:
        log.error("the circuit breaker states cannot be read: %s", exc)
        opened = []
    # The split is read a moment after the books: fit it to the books' own deferred count,
    # so that its parts always add up to it.
    try:
        read_split = deferred_by(store)
    except redis.ResponseError as exc:  # a held set of the wrong type: all counted as the relay's
        log.error("the deferred split cannot be read: %s", exc)
        read_split = {"rate": 0, "breaker": 0}
    rate_held = min(read_split["rate"], books.deferred)
    breaker_held = min(read_split["breaker"], books.deferred - rate_held)
    split = {"rate": rate_held, "breaker": breaker_held, "relay": books.deferred - rate_held - breaker_held}
    try:
        relays = routing.relay_states(store.client, store.settings, now)
    except (ValueError, redis.ResponseError) as exc:
        log.error("the relay states cannot be read: %s", exc)
        relays = {}
    top, count, paused = tenant_figures(store)
    return Status(books, store.oldest_age_s(), rate, eta, sorted(opened), held_by, split, held, domains_held,
                  relays, top, count, paused, eta_at_least=bool(eta) and eta == shape.eta_s and shape.eta_at_least)


def tenant_figures(store: Store, top: int = TENANTS_SHOWN) -> tuple[list[tuple[str, int]], int, list[str]]:
    """The tenants with the most queued mail, how many have any, and the paused ones (a
    damaged key reads as none, logged)."""
    try:
        queued = cast(dict[bytes, bytes], store.client.hgetall(keys.TENANT_SHAPE))
        paused = cast(set[bytes], store.client.smembers(keys.PAUSED_TENANTS))
    except redis.ResponseError as exc:
        log.error("the tenant figures cannot be read: %s", exc)
        return [], 0, []
    counts: dict[str, int] = {}
    for name, value in queued.items():
        try:
            counts[name.decode("utf-8", "replace")] = int(value)
        except ValueError:
            continue
    ranked = sorted(((n, c) for n, c in counts.items() if c > 0), key=lambda item: (-item[1], item[0]))
    return ranked[:top], len(ranked), sorted(p.decode("utf-8", "replace") for p in paused)


def startup_line(role: str, settings: Settings, client: redis.Redis) -> str:
    """What a long-running command runs with, said once at start: which Redis and which relay
    (passwords hidden) and which rates."""
    from drain.store.connection import redacted

    where = (redacted(settings.redis_url) if settings.redis_url
             else f"{embedded.url_for(settings.home)} (embedded, in {settings.home.resolve()})")
    try:
        limits = ratelimit.show(client)
    except redis.RedisError as exc:
        rates = f"unreadable ({exc})"
    else:
        glob = limits["global"]
        rates = f"global {ratelimit.format_rate(glob if isinstance(glob, float) else None)}"
        burst = limits["burst_s"]
        rates += f", burst {burst if isinstance(burst, float) else settings.burst_s:g} s"
        if limits["paused"]:
            rates += ", delivery PAUSED"
        domains = limits["domains"]
        caps = [f"{name} {ratelimit.format_rate(d['rate'])}" for name, d in domains.items()
                if d["rate"] is not None or d["paused"]] if isinstance(domains, dict) else []
        if caps:
            rates += f"; {len(caps)} domain limit(s): {', '.join(caps[:5])}{' ...' if len(caps) > 5 else ''}"
    line = f"drain {role}: Redis {where}; relay {redacted(settings.relay)}; rates {rates}"
    if role == "worker":  # (a relative folder is each worker's own: recovery reads its files only)
        from drain.store.localjournal import folder

        local = folder(settings)
        line += f"; local delivery journal {local.resolve() if local is not None else 'off'}"
    return line
