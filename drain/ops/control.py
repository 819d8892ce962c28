"""Operator actions on the flow of mail: rates, pauses and circuit breakers.

Each action makes its state move, writes its audit record where it has one, and tops the
RQ work tokens up once (`top_up`) when it may have let mail go, so no caller has to."""

from __future__ import annotations

import time
from dataclasses import dataclass

from drain.flow import breaker, gate, ratelimit
from drain.intake import door
from drain.ops import audit, pauses
from drain.ops.pauses import DELIVERY, DOMAIN, INTAKE
from drain.store.store import Store
from drain.worker.dispatch import ensure_tokens

__all__ = ["DELIVERY", "DOMAIN", "INTAKE", "RateSet", "close_breaker", "lapse", "pause", "resume", "scope_of",
           "set_rate", "top_up"]


def top_up(store: Store) -> int:
    """Queue the batch jobs the ready list needs now; returns how many were added."""
    return ensure_tokens(store.client, store.settings)


@dataclass(frozen=True)
class RateSet:
    domain: str | None
    rate: float | None
    concurrency: int | None
    burst: float | None

    @property
    def held(self) -> bool:
        return ratelimit.holds(self.rate)


def set_rate(store: Store, per_second: float | None, domain: str | None = None,
             concurrency: int | None = None, burst: float | None = None, reason: str = "") -> RateSet:
    """Set the global rate (or a domain's cap and concurrency) and the burst, audited; a domain
    cap that lets mail go again puts the mail a cap of 0 parked back on the ready list."""
    client = store.client
    if burst is not None:
        ratelimit.set_burst(client, burst)
    if domain is not None:
        ratelimit.set_domain(client, domain, per_second)
        if concurrency is not None:
            ratelimit.set_concurrency(client, domain, concurrency)
        if not ratelimit.holds(per_second):
            gate.unpark(store, domain)  # mail a cap of 0 parked goes back to ready
    else:
        ratelimit.set_global(client, per_second)
    audit.write(client, "rate-set", store.settings.actor, reason, domain=domain,
                rate=ratelimit.format_rate(per_second), concurrency=concurrency, burst=burst)
    top_up(store)
    return RateSet(domain, per_second, concurrency, burst)


def scope_of(domain: str | None, intake: bool) -> str:
    return DOMAIN if domain else INTAKE if intake else DELIVERY


def pause(store: Store, domain: str | None = None, intake: bool = False, reason: str = "",
          for_s: float | None = None) -> str:
    """Pause delivery to one domain, the SMTP intake, or all delivery, for for_s seconds or
    until resumed; noted (why, who, until when) and audited. Returns the scope."""
    scope = scope_of(domain, intake)
    name = domain.lower() if domain else None
    actor = store.settings.actor
    if _outlasts(store, scope, name, for_s):
        # A pause never shortens one in force: a second operator's `pause --for 5m` made an
        # incident's pause-until-resumed end by itself, its reason and author erased.
        audit.write(store.client, "pause", actor, reason, scope=scope, name=name, kept="the pause in force")
        return scope
    ttl_ms = max(1, round(for_s * 1000)) if for_s is not None else None
    if scope == DOMAIN:
        ratelimit.pause_domain(store.client, str(name))
    elif scope == INTAKE:
        door.pause(store.client, ttl_ms)
    else:
        ratelimit.pause(store.client, ttl_ms)
    until = time.time() + for_s if for_s is not None else None
    pauses.note(store.client, scope, name, actor, reason, until)
    audit.write(store.client, "pause", actor, reason, scope=scope, name=name,
                until=f"{until:.3f}" if until is not None else None)
    return scope


def _outlasts(store: Store, scope: str, name: str | None, for_s: float | None) -> bool:
    """Whether a pause of this scope is in force until resumed, or past now + for_s."""
    row = next((r for r in pauses.listing(store.client) if r["scope"] == scope and r["name"] == name), None)
    if row is None:
        return False
    return row["until"] is None or (for_s is not None and row["until"] >= time.time() + for_s)


def resume(store: Store, domain: str | None = None, intake: bool = False, reason: str = "",
           actor: str | None = None) -> int:
    """Undo `pause` for the same scope (audited); returns how many parked messages went back
    to ready (a domain's only). Delivery that starts again gets its work tokens."""
    scope = scope_of(domain, intake)
    name = domain.lower() if domain else None
    pauses.clear(store.client, scope, name)
    audit.write(store.client, "resume", actor or store.settings.actor, reason, scope=scope, name=name)
    if scope == INTAKE:
        door.resume(store.client)
        return 0
    moved = 0
    if scope == DOMAIN:
        ratelimit.resume_domain(store.client, str(domain))
        moved = gate.unpark(store, str(domain).lower())
    else:
        ratelimit.resume(store.client)
    top_up(store)
    return moved


def close_breaker(store: Store, name: str, actor: str, note: str = "") -> int | None:
    """Close a circuit breaker (audited); its held mail is due at once. Returns how many
    held messages were made due, or None when there was no breaker on record for name."""
    released = breaker.close(store.client, name, actor, note)
    if released is not None:
        top_up(store)
    return released


def lapse(store: Store, now: float | None = None) -> int:
    """Resume the domains whose timed pause (`drain pause --domain D --for DUR`) is over;
    returns how many."""
    lapsed = pauses.lapsed_domains(store.client, now)
    for name in lapsed:
        resume(store, name, reason="the pause's time is over", actor="timer")
    return len(lapsed)
