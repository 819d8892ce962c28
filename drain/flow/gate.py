"""May this message go now? The one answer, per message, from breakers, pauses, domain rates,
concurrency caps and adaptive rates; and what the flow learns from each reply.

A batch makes one `Gate`, whose reads of the breakers and of which domains are limited at
all go with the claim's other reads (`queue`/`take`, drain.worker.preamble); it calls `ask`
per message, `sent` after a send that took a concurrency slot, and `heard` with the relay's
reply. The domain checks run in Redis
(gate.lua, unpark.lua), atomic with the booking of a send time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import redis

from drain.flow import adapt
from drain.flow.breaker import RELAY, Breakers
from drain.store import keys
from drain.store.store import Store

# Verdicts of gate.lua: go, not yet (a send time is booked), paused, at its concurrency cap,
# booked beyond the horizon (or parked mail is waiting ahead of it).
GATE_GO, GATE_LATER, GATE_PAUSED, GATE_BUSY, GATE_FAR = 0, 1, 2, 3, 4
# A message held by an open breaker is due within this many seconds after it closes, spread
# so that held mail does not all come back at once.
BREAKER_SPREAD_S = 5.0


@dataclass(frozen=True)
class Answer:
    """What to do with one message: send it, hold it until a time, or park it with its domain."""

    kind: Literal["send", "hold", "park"]
    # For a hold: not before this time (epoch seconds), why ("rate" or "breaker") and a note.
    until: float = 0.0
    why: str = ""
    note: str = ""
    # For a send: a concurrency slot of the domain was taken; `Gate.sent` frees it.
    slot: bool = False


SEND = Answer("send")
PARK = Answer("park")


class Reply(Protocol):
    """What the flow needs of a delivery attempt's result (drain.worker.delivery.Result)."""

    @property
    def kind(self) -> str: ...
    @property
    def code(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def relay_fault(self) -> bool: ...


@dataclass(frozen=True)
class Constrained:
    """Domains the gate must be asked about (any limit, pause or adaptive rate), those with a
    concurrency cap, and those adapting, as read for one claim."""

    limited: set[str]
    capped: set[str]
    adaptive: set[str]


def constrained_on(pipe: redis.client.Pipeline) -> int:
    """Which domains are limited, capped and adapting: the reads, on a pipeline sent with
    others (constrained_from takes their replies); returns how many."""
    pipe.hkeys(keys.DOMAIN_RATES)
    pipe.hkeys(keys.DOMAIN_EFFECTIVE)
    pipe.hkeys(keys.DOMAIN_CONCURRENCY)
    pipe.smembers(keys.PAUSED_DOMAINS)
    return 4


def constrained_from(replies: list[Any]) -> Constrained:
    """constrained from the replies to constrained_on's reads."""
    rates, effective, concurrency, paused = ({v.decode() for v in r} for r in replies)
    return Constrained(rates | effective | concurrency | paused, concurrency, effective)


def gate(store: Store, domain: str, msg_id: str, reserved_us: float = 0.0) -> tuple[int, float]:
    """Ask the domain's limits whether a message may go now (see gate.lua): (verdict, value)."""
    settings = store.settings
    verdict, value = store.scripts.gate(
        keys=[keys.DOMAIN_RATES, keys.DOMAIN_EFFECTIVE, keys.DOMAIN_CONCURRENCY, keys.PAUSED_DOMAINS,
              keys.DOMAIN_TAT, keys.busy(domain), keys.parked(domain), keys.UNPARKED, keys.DOMAIN_SENT],
        args=[domain, msg_id, settings.burst_s, int(settings.lease_ttl_s * 1000), f"{reserved_us:.0f}",
              int(settings.rate_horizon_s * 1e6)],
    )
    return int(verdict), float(value)


def unpark(store: Store, domain: str, most: int = 0, done_id: str = "") -> int:
    """Free a sent message's busy slot and move parked mail of the domain back to ready (see
    unpark.lua); returns how many moved. Batch jobs for them: drain.worker.dispatch."""
    settings = store.settings
    return int(store.scripts.unpark(
        keys=[keys.parked(domain), keys.READY_COUNT, keys.BOOKS, keys.PAUSED_DOMAINS, keys.busy(domain),
              keys.DOMAIN_CONCURRENCY, keys.PARKED_DOMAINS, keys.DOMAIN_RATES, keys.DOMAIN_EFFECTIVE,
              keys.UNPARKED, keys.DOMAIN_TAT],
        args=[domain, most, done_id, settings.burst_s, int(settings.rate_horizon_s * 1e6)],
    ))


def unpark_all(store: Store) -> int:
    """Unpark every domain that has parked mail (those no longer paused, or with free slots:
    a worker that died holding a slot frees it when the slot lapses); returns how many moved."""
    return sum(unpark(store, domain.decode())
               for domain in cast(set[bytes], store.client.smembers(keys.PARKED_DOMAINS)))


class Gate:
    """The flow's view for one batch: breakers and the domains' limits, refreshed per claim."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.breakers = Breakers(store.client, store.settings)
        self.limits = Constrained(set(), set(), set())

    def refresh(self) -> None:
        """Read the breakers and which domains are limited (once per claim)."""
        pipe = self.store.client.pipeline(transaction=False)
        self.queue(pipe)
        self.take(pipe.execute(raise_on_error=False))

    def queue(self, pipe: redis.client.Pipeline) -> int:
        """refresh's reads on a pipeline sent with the claim's other reads (drain.worker.preamble)."""
        return self.breakers.queue(pipe) + constrained_on(pipe)

    def take(self, replies: list[Any]) -> None:
        """refresh's replies (from `queue`); the first error among them is raised."""
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        self.breakers.take(replies[:3])
        self.limits = constrained_from(replies[3:])

    def undo(self) -> None:
        """(The reads failed: nothing was taken.)"""

    def ask(self, domain: str, msg_id: str, reserved_us: float, now: float,
            relays: Sequence[str] = (RELAY,)) -> Answer:
        """May this message to `domain` go now? reserved_us: the send time booked for it before;
        relays: the names of the relays its route may use (held while every one's breaker is open)."""
        shut = [self.breakers.held_until(name, now) for name in relays]
        closing = min((t for t in shut if t is not None), default=None) if all(shut) else None
        for destination, held in ((relays[0] if len(relays) == 1 else "every relay of its route", closing),
                                  (domain, self.breakers.held_until(domain, now))):
            if held is not None:
                until = time.strftime("%H:%M:%S", time.localtime(held))
                return Answer("hold", held + random.uniform(0, BREAKER_SPREAD_S), "breaker",
                              f"circuit breaker open for {destination} until {until}")
        if domain not in self.limits.limited:
            return SEND
        verdict, value = gate(self.store, domain, msg_id, reserved_us)
        if verdict == GATE_LATER:
            slot = value / 1e6
            at = time.strftime("%H:%M:%S", time.localtime(slot))
            return Answer("hold", slot, "rate", f"rate limit for {domain}: sends at {at}")
        if verdict in (GATE_PAUSED, GATE_BUSY, GATE_FAR):
            return PARK
        return Answer("send", slot=domain in self.limits.capped)

    def sent(self, domain: str, msg_id: str) -> None:
        """A send that took a concurrency slot is over: free the slot, let one parked message on."""
        unpark(self.store, domain, most=1, done_id=msg_id)

    def heard(self, domain: str, reply: Reply, now: float, relay: str = RELAY) -> None:
        """Learn from the relay's reply: adaptive rate down on "slow down", up on success for a
        domain that adapts; breakers count failures of the relay or of the domain."""
        if reply.kind == "deferred" and adapt.is_throttling(reply.code, reply.text):
            adapt.throttled(self.store, domain, now)
            self.limits.adaptive.add(domain)
        elif reply.kind == "delivered" and domain in self.limits.adaptive and adapt.recovered(
                self.store, domain, now) is None:
            self.limits.adaptive.discard(domain)
        if reply.kind == "deferred":
            # No reply at all (refused, dropped, timed out), TLS, AUTH, a missing extension or a
            # session reply is the relay's trouble (or drain's), not the domain's.
            self.breakers.failure(relay if reply.code == 0 or reply.relay_fault else domain, now)
        else:
            self.breakers.success(relay)
            self.breakers.success(domain)
