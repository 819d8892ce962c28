"""Work one batch: claim ready messages, validate, quarantine or deliver, and settle.

Outcomes are settled every `settle_every` messages, so a crash repeats at most that many
deliveries; whatever a batch has not reached when it stops goes back to the ready list.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rq.timeouts import JobTimeoutException

from drain import validate
from drain.delivery import Relay
from drain.retry import deferral_delay
from drain.rules import Rule, first_match
from drain.store import Outcome, Store, Stored

log = logging.getLogger(__name__)

TIMEOUT_FINDINGS = json.dumps([{"code": "poison.timeout", "detail": "worked past the job time limit"}])
# Longest single pause while the rate limit says wait; the claim is asked again after it.
MAX_RATE_WAIT_S = 1.0


@dataclass
class Tally:
    delivered: int = 0
    bounced: int = 0
    deferred: int = 0
    quarantined: int = 0
    requeued: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        if outcome.kind == "requeue":
            self.requeued += 1
        elif outcome.kind != "vanished":
            setattr(self, outcome.kind, getattr(self, outcome.kind) + 1)


class Batch:
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
        result = self.relay.send(env.sender, list(env.recipients), msg.raw)
        if result.kind == "delivered":
            return Outcome(msg.id, "delivered", info=result.reply if result.refused else "")
        if result.kind == "bounced":
            return Outcome(msg.id, "bounced", info=result.reply)
        now = self.clock()
        if now - msg.accepted_at >= self.settings.max_lifetime_s:
            return Outcome(msg.id, "bounced", info=f"expired: {result.reply}")
        due = now + deferral_delay(self.settings, msg.attempts + 1)
        return Outcome(msg.id, "deferred", score=due, info=result.reply)

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
        finally:
            # Anything not reached (an exception, a job timeout) goes back, untouched.
            pending += [Outcome(i, "requeue") for i in ids if i not in done]
            self._settle(pending)

    def _settle(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        _settled, skipped = self.store.settle(self.owner, outcomes)
        if skipped:
            log.warning("%d outcomes skipped: their lease lapsed and they went back to ready", skipped)
        for outcome in outcomes:
            self.tally.add(outcome)
