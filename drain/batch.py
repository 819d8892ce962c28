"""Work one batch: claim ready messages, validate, quarantine or deliver, and settle.

Outcomes are settled every `settle_every` messages, so a crash repeats at most that many
deliveries; whatever a batch has not reached when it stops goes back to the ready list.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rq.timeouts import JobTimeoutException

from drain import dsn, ratelimit, validate
from drain.breaker import Breakers
from drain.delivery import Relay
from drain.message import Envelope
from drain.retry import deferral_delay
from drain.rules import Rule, first_match
from drain.store import Damaged, Outcome, Store, Stored

log = logging.getLogger(__name__)

TIMEOUT_FINDINGS = json.dumps([{"code": "poison.timeout", "detail": "worked past the job time limit"}])
# Verdicts of the domain gate (gate.lua).
GATE_LATER, GATE_PAUSED, GATE_BUSY, GATE_FAR = 1, 2, 3, 4
# The breaker name for failures of the relay itself (no SMTP reply at all).
RELAY = "(relay)"
# Longest single pause while the rate limit says wait; the claim is asked again after it.
MAX_RATE_WAIT_S = 1.0


@dataclass
class Tally:
    """What one batch did, by outcome kind and by quarantine reason."""

    kinds: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.kinds[outcome.kind] = self.kinds.get(outcome.kind, 0) + 1

    def __getitem__(self, kind: str) -> int:
        return self.kinds.get(kind, 0)


class Batch:
    # Set when a settle finds messages no longer held (the lease lapsed and housekeeping gave
    # them to others): the rest of the claim is then left alone, not delivered a second time.
    lost = False

    def __init__(
        self,
        store: Store,
        relay: Relay,
        owner: str,
        limits: validate.Limits,
        severity: dict[str, str] | None = None,
        rules: list[Rule] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.settings = store.settings
        self.relay = relay
        self.owner = owner
        self.limits = limits
        self.severity = severity or validate.SEVERITY
        self.rules = rules or []
        self.clock = clock
        self.sleep = sleep
        self.tally = Tally()
        self.breakers = Breakers(store.client, self.settings)
        # Domains to ask the gate about, those with a concurrency cap, those adapting (per claim).
        self.limited: set[str] = set()
        self.capped: set[str] = set()
        self.adaptive: set[str] = set()
        # Ids of the current claim that came from the fresh lane.
        self.fresh_ids: set[str] = set()
        # Bounce reports to send once the outcomes are settled: (message, recipient -> reply).
        self.reports: list[tuple[Stored, dict[str, str]]] = []

    def decide(self, msg: Stored) -> Outcome:
        if not msg.force:
            rule = first_match(self.rules, msg.raw, msg.envelope)
            if rule is not None:
                self._count("rule.match")
                return Outcome(msg.id, "quarantined", info=rule.findings())
            verdict = validate.check(msg.raw, msg.envelope, self.limits, self.severity)
            if not verdict.ok:
                for code in verdict.reasons:
                    self._count(code)
                return Outcome(msg.id, "quarantined", info=verdict.evidence_json())
        env = msg.envelope
        now = self.clock()
        for destination in (RELAY, env.domain):
            held = self.breakers.held_until(destination, now)
            if held is not None:
                until = time.strftime("%H:%M:%S", time.localtime(held))
                return Outcome(msg.id, "held", score=held + random.uniform(0, 5),
                               info=f"circuit breaker open for {destination} until {until}")
        domain = env.domain
        took_slot = False
        if domain in self.limited:
            answer, value = self.store.gate(domain, msg.id, msg.slot_us)
            if answer == GATE_LATER:
                slot = value / 1e6
                at = time.strftime("%H:%M:%S", time.localtime(slot))
                return Outcome(msg.id, "held", score=slot, info=f"rate limit for {domain}: sends at {at}")
            if answer in (GATE_PAUSED, GATE_BUSY, GATE_FAR):
                fresh = msg.fresh or msg.id in self.fresh_ids
                return Outcome(msg.id, "parked", score=1 if fresh else 0, info=domain)
            took_slot = domain in self.capped
        try:
            result = self.relay.send(env.sender, list(env.recipients), msg.raw)
        finally:
            if took_slot:
                self.store.unpark(domain, most=1, done_id=msg.id)
        if result.kind == "deferred" and ratelimit.is_throttling(result.code, result.text):
            ratelimit.throttled(self.store.client, domain, now)
            self.adaptive.add(domain)
        elif result.kind == "delivered" and domain in self.adaptive and ratelimit.recovered(
                self.store.client, domain, now) is None:
            self.adaptive.discard(domain)
        if result.kind == "deferred":
            # No reply at all (refused, dropped, timed out) is the relay's trouble, not the domain's.
            self.breakers.failure(RELAY if result.code == 0 else env.domain, now)
        else:
            self.breakers.success(RELAY)
            self.breakers.success(env.domain)
        permanent = {r: f"{c} {t}" for r, (c, t) in result.refused.items() if 500 <= c < 600}
        if result.kind == "bounced":
            self._report(msg, permanent or dict.fromkeys(env.recipients, result.reply))
            return Outcome(msg.id, "bounced", info=result.reply)
        if result.kind == "delivered":
            if permanent:
                self._report(msg, permanent)
            transient = [r for r, (c, _t) in result.refused.items() if not 500 <= c < 600]
            if not transient:
                return Outcome(msg.id, "delivered", info=result.reply if result.refused else "")
            # Some recipients took it, some said "later": the rest is deferred on its own.
            rest = Envelope(env.sender, tuple(transient))
            return self._defer(msg, now, result.reply, rest.to_json())
        return self._defer(msg, now, result.reply)

    def _defer(self, msg: Stored, now: float, reply: str, envelope: str = "") -> Outcome:
        if now - msg.accepted_at >= self.settings.max_lifetime_s:
            self._report(msg, dict.fromkeys(msg.envelope.recipients, f"expired after {msg.attempts + 1} attempts: "
                                                                      f"{reply}"))
            return Outcome(msg.id, "bounced", info=f"expired: {reply}")
        due = now + deferral_delay(self.settings, msg.attempts + 1)
        return Outcome(msg.id, "deferred", score=due, info=reply, envelope=envelope)

    def _report(self, msg: Stored, failed: dict[str, str]) -> None:
        # Never bounce a bounce: mail from the null sender gets no report.
        if self.settings.dsn and msg.envelope.sender and failed:
            self.reports.append((msg, failed))

    def _send_reports(self) -> None:
        if not self.reports:
            return
        items = [(dsn.build(m.raw, m.envelope, failed, m.id, self.settings.hostname, m.accepted_at),
                  Envelope("", (m.envelope.sender,)), None) for m, failed in self.reports]
        self.reports = []
        self.store.enqueue_many(items)

    def _count(self, code: str) -> None:
        self.tally.reasons[code] = self.tally.reasons.get(code, 0) + 1

    def run(self) -> int:
        """Work up to batch_size messages; returns how many were claimed."""
        handled = 0
        want = self.settings.batch_size
        while handled < want:
            claim = self.store.claim(self.owner, want - handled)
            if claim.paused:
                break
            if claim.wait_s:
                self.sleep(min(claim.wait_s, MAX_RATE_WAIT_S))
                continue
            if not claim.ids:
                break
            self.breakers.refresh()
            self.fresh_ids = claim.fresh
            self.limited, self.capped, self.adaptive = ratelimit.constrained(self.store.client)
            handled += len(claim.ids)
            self._work(claim.ids)
        return handled

    def _work(self, ids: list[str]) -> None:
        pending: list[Outcome] = []
        done: set[str] = set()
        try:
            for msg_id, msg in zip(ids, self.store.load(ids), strict=True):
                if msg is None:
                    log.error("message %s has no data in Redis; counted as deleted", msg_id)
                    outcome = Outcome(msg_id, "vanished")
                elif isinstance(msg, Damaged):
                    outcome = msg.outcome()  # logged by the store; quarantined or dropped
                else:
                    try:
                        outcome = self.decide(msg)
                    except JobTimeoutException:
                        # The job's time limit struck while this message was being worked:
                        # it takes the strike, the rest of the batch goes back untouched.
                        log.warning("message %s outlived the job time limit", msg_id)
                        pending.append(Outcome(msg_id, "timeout", info=TIMEOUT_FINDINGS))
                        done.add(msg_id)
                        raise
                pending.append(outcome)
                done.add(msg_id)
                if len(pending) >= self.settings.settle_every:
                    self._settle(pending)
                    pending = []
                    if self.lost:
                        break
        finally:
            # Anything not reached (an exception, a job timeout) goes back, untouched.
            pending += [Outcome(i, "requeue") for i in ids if i not in done]
            self._settle(pending)

    def _settle(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        _settled, skipped = self.store.settle(self.owner, outcomes)
        self._send_reports()
        if skipped:
            log.warning("%d outcomes skipped: their lease lapsed and they went back to ready", skipped)
            self.lost = True
        for outcome in outcomes:
            self.tally.add(outcome)
