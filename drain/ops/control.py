"""Operator actions on the flow of mail: rates, pauses and circuit breakers.

Each action makes its state move, writes its audit record where it has one, and tops the
RQ work tokens up once (`top_up`) when it may have let mail go, so no caller has to."""

from __future__ import annotations

from dataclasses import dataclass

from drain.flow import breaker, gate, ratelimit
from drain.intake import door
from drain.store.store import Store
from drain.worker.dispatch import ensure_tokens

DELIVERY, INTAKE, DOMAIN = "delivery", "intake", "domain"


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
             concurrency: int | None = None, burst: float | None = None) -> RateSet:
    """Set the global rate (or a domain's cap and concurrency) and the burst; a domain cap
    that lets mail go again puts the mail a cap of 0 parked back on the ready list."""
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
    top_up(store)
    return RateSet(domain, per_second, concurrency, burst)


def scope_of(domain: str | None, intake: bool) -> str:
    return DOMAIN if domain else INTAKE if intake else DELIVERY


def pause(store: Store, domain: str | None = None, intake: bool = False) -> str:
    """Pause delivery to one domain, the SMTP intake, or all delivery; returns the scope."""
    scope = scope_of(domain, intake)
    if scope == DOMAIN:
        ratelimit.pause_domain(store.client, str(domain))
    elif scope == INTAKE:
        door.pause(store.client)
    else:
        ratelimit.pause(store.client)
    return scope


def resume(store: Store, domain: str | None = None, intake: bool = False) -> int:
    """Undo `pause` for the same scope; returns how many parked messages went back to ready
    (a domain's only). Delivery that starts again gets its work tokens."""
    scope = scope_of(domain, intake)
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
