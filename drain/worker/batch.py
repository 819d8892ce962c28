"""Work one batch: claim ready messages, validate, quarantine or deliver, and settle.

Outcomes are settled every `settle_every` messages, so a crash repeats at most that many
deliveries; whatever a batch has not reached when it stops goes back to the ready list.
Deliveries are settled by writing them to the owner's journal (drain/store/journal.py), one
plain command shared by the lanes of the process (drain/worker/journalpool.py), and the
journal is settled by one script call at the end of the claim. The settling itself is in
drain/worker/settling.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable

import redis
from rq.timeouts import JobTimeoutException

from drain import validate
from drain.flow.gate import Answer, Gate
from drain.intake.rules import Rule, first_match
from drain.message import without_bcc
from drain.store import events, journal
from drain.store.store import Damaged, Outcome, Store, Stored
from drain.worker import dsn, preamble
from drain.worker.alone import Alone
from drain.worker.delivery import Relay
from drain.worker.dispatch import Span
from drain.worker.groups import Groups
from drain.worker.journalpool import JournalPool
from drain.worker.lease import LEASE_CHECK_AFTER, lease_clock, renewed_holding
from drain.worker.preamble import Loaded
from drain.worker.relays import BUSY_WAIT_S, Relays
from drain.worker.retry import next_try_in, redis_backoff
from drain.worker.settling import Settling
from drain.worker.tally import Tally
from drain.worker.window import Window, size_for

log = logging.getLogger(__name__)

TIMEOUT_FINDINGS = json.dumps([{"code": "poison.timeout", "detail": "worked past the job time limit"}])
# Longest single pause while the rate limit says wait; the claim is asked again after it.
MAX_RATE_WAIT_S = 1.0
# With nothing ready, a batch waits for held mail due within this long (its booked send time
# is near), promotes it itself and goes on, rather than ending and leaving it to the next
# promotion and job: sends then go on their booked times. At most HOLD_WAIT_BUDGET_S a batch.
HOLD_WAIT_S = 0.25
HOLD_WAIT_BUDGET_S = 2.0


class Batch(Settling):
    # Set when a settle finds messages no longer held (the lease lapsed and housekeeping gave
    # them to others): the rest of the claim is then left alone, not delivered a second time.
    lost = False
    # Lanes of one process (drain.worker.lanes): suspects are worked alone (drain.worker.alone);
    # past `deadline` (time.monotonic) no lane starts another message; when the job's time
    # limit strikes, `blame` says whether this lane's message takes the strike (it may be
    # another lane's, the one in progress longest); `current` is (id, start) of the message
    # being worked; `span`, when set, says whether to claim another batch once one is done
    # (drain.worker.dispatch.Span: a big backlog).
    alone: Alone | None = None
    deadline: float | None = None
    blame: Callable[[Batch], bool] | None = None
    current: tuple[str, float] | None = None
    span: Span | None = None

    def __init__(
        self,
        store: Store,
        relay: Relay | Relays,
        owner: str,
        limits: validate.Limits,
        severity: dict[str, str] | None = None,
        rules: list[Rule] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        lease_clock: Callable[[], float] = lease_clock,
        window: Window | None = None,
        stop: threading.Event | None = None,
        limited: threading.Lock | None = None,
    ) -> None:
        self.store = store
        self.settings = store.settings
        # The relays by route (a lone Relay is the environment's relay, for every destination).
        self.relays = relay if isinstance(relay, Relays) else Relays(store.client, store.settings, relay)
        # Tenants of the current claim's messages (read only while some route is by tenant).
        self.tenants: dict[str, str] = {}
        self.owner = owner
        self.limits = limits
        self.severity = severity or validate.SEVERITY
        self.rules = rules or []
        self.clock = clock
        self.sleep = sleep
        self.lease_clock = lease_clock
        # When this batch last wrote its lease (sent the claim or a check): the lease holds
        # until at least then + lease_ttl_s, by the Redis server's clock.
        self.lease_written = float("-inf")
        self.tally = Tally()
        # May each message go now: breakers, pauses, domain rates and caps (drain.flow.gate).
        self.gate = Gate(store)
        # Ids of the current claim that came from the fresh lane.
        self.fresh_ids: set[str] = set()
        # Bounce reports to send once the outcomes are settled: (message, recipient -> reply, its tenant).
        self.reports: list[tuple[Stored, dict[str, str], str]] = []
        # Places taken in the process's settle window for messages not yet settled (a lone
        # batch has a window of its own); other lanes of the job share it (drain.worker.lanes).
        self.window = window or Window(size_for(store))
        self.taken = 0
        # The lanes' deliveries waiting for the journal (drain.worker.journalpool); whether this
        # claim's may go there (not when it took a capped tenant's concurrency slot: settling frees it).
        if self.window.pool is None:
            self.window.pool = JournalPool(store, self.window.give)
        self.pool = self.window.pool
        self.journalling = True
        # Set when the job ends early (its time limit struck another lane): stop between messages.
        self.stop = stop
        # Held by the lane asking for and sending mail to a domain with a limit (drain.worker.lanes).
        self.limited = limited or threading.Lock()

    def decide(self, msg: Stored) -> Outcome:
        if not msg.force:
            rule = first_match(self.rules, msg.raw, msg.envelope)
            if rule is not None:
                self.tally.reason("rule.match")
                return Outcome(msg.id, "quarantined", info=rule.findings())
            verdict = validate.check(msg.raw, msg.envelope, self.limits, self.severity)
            if not verdict.ok:
                for code in verdict.reasons:
                    self.tally.reason(code)
                return Outcome(msg.id, "quarantined", info=verdict.evidence_json())
        env = msg.envelope
        now = self.clock()
        # One copy of the bytes for every group (the stored original keeps its Bcc, as
        # quarantine evidence; the copy sent does not).
        raw = without_bcc(msg.raw)
        tenant = self.tenants.get(msg.id, "")
        tally = Groups()
        # (A message released with --force may have no recipient: one empty group, as before.)
        for index, (domain, rcpts) in enumerate(env.by_domain() or [(env.domain, env.recipients)]):
            urls = self.relays.routes.chain(domain, tenant)
            # A send time booked before was for the first group's domain (narrow.lua keeps it so).
            with self.limited if domain in self.gate.limits.limited else contextlib.nullcontext():
                answer = self.gate.ask(domain, msg.id, msg.slot_us if index == 0 else 0.0, now,
                                       self.relays.names(urls))
                if answer.kind == "send":
                    answer = self._send(msg, domain, rcpts, raw, urls, answer, now, tally)
            if answer.kind != "send":
                tally.blocked.append((domain, rcpts, answer))
        return self._conclude(msg, tally, now)

    def _send(self, msg: Stored, domain: str, rcpts: tuple[str, ...], raw: bytes, urls: tuple[str, ...],
              answer: Answer, now: float, tally: Groups) -> Answer:
        """Hand one destination group to its route's relays; returns SEND, or a short hold
        when the route's relay is at its concurrency cap."""
        env = msg.envelope
        try:
            sent = self.relays.send(urls, self.gate.breakers, msg.id, env.sender, list(rcpts), raw, env.smtputf8, now)
        finally:
            if answer.slot:
                self._after_send(self.gate.sent, domain, msg.id)
        for name, failure in sent.failed:
            self._after_send(self.gate.heard, domain, failure, now, name)
        if sent.result is None:
            return Answer("hold", now + BUSY_WAIT_S + random.uniform(0, BUSY_WAIT_S), "rate",
                          f"the relay for {domain} is at its concurrency cap")
        self._after_send(self.gate.heard, domain, sent.result, now, sent.relay)
        tally.add(rcpts, sent.result)
        return answer

    def _conclude(self, msg: Stored, tally: Groups, now: float) -> Outcome:
        """One outcome for the message from its groups' (counted once in the books)."""
        if not (tally.delivered or tally.bounced or tally.transient):
            _domain, _rcpts, answer = tally.blocked[0]  # nothing was tried: held as it is
            return self._wait(msg, msg.envelope.domain, answer)
        self._report(msg, tally.bounced)
        rest = tally.rest(msg.envelope)
        if not rest.recipients:
            if tally.delivered:
                # The relays' own replies (with their queue ids) go to the delivered event.
                reply = "; ".join(tally.accepted)[:1000]
                return Outcome(msg.id, "delivered", info=json.dumps(tally.bounced) if tally.bounced else "",
                               envelope=reply, event=events.delivered_data(reply, msg.attempts + 1,
                                                                           self.clock() - msg.accepted_at))
            return Outcome(msg.id, "bounced", info=tally.reply)
        if rest.recipients != msg.envelope.recipients:
            # Some groups are done: the rest keeps its turn, its next domain first (books unchanged).
            self.store.narrow(self.owner, msg.id, rest, bool(tally.delivered), "; ".join(tally.accepted)[:1000],
                              json.dumps(tally.bounced) if tally.bounced else "")
        if tally.blocked:
            domain, _rcpts, answer = tally.blocked[0]
            return self._wait(msg, domain, answer)
        return self._defer(msg, now, tally.reply, rest.recipients, quick=not tally.slow, throttled=tally.throttled)

    def _wait(self, msg: Stored, domain: str, answer: Answer) -> Outcome:
        if answer.kind == "hold":
            return Outcome(msg.id, "held", score=answer.until, info=answer.note, envelope=answer.why)
        fresh = msg.fresh or msg.id in self.fresh_ids
        return Outcome(msg.id, "parked", score=1 if fresh else 0, info=domain)

    def _defer(self, msg: Stored, now: float, reply: str, left: tuple[str, ...], quick: bool = False,
               throttled: bool = False) -> Outcome:
        if now - msg.accepted_at >= self.settings.max_lifetime_s:
            self._report(msg, dict.fromkeys(left, f"expired after {msg.attempts + 1} attempts: {reply}"))
            return Outcome(msg.id, "bounced", info=f"expired: {reply}")
        due = now + next_try_in(self.settings, msg.attempts + 1, quick, throttled)
        return Outcome(msg.id, "deferred", score=due, info=reply)

    def _after_send(self, step: Callable[..., object], *args: object) -> None:
        """Bookkeeping once the relay has answered (the concurrency slot, breakers, the adaptive
        rate). Redis trouble here must not lose the relay's answer: the message would go back
        to ready untouched and be sent again. The slot expires with the lease anyway."""
        try:
            step(*args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("after a send, %s was skipped (Redis unavailable: %s); the outcome is kept",
                        getattr(step, "__name__", "bookkeeping"), exc)

    def _report(self, msg: Stored, failed: dict[str, str]) -> None:
        # Never bounce a bounce: mail from the null sender gets no report.
        if self.settings.dsn and msg.envelope.sender and failed:
            self.reports.append((msg, failed, dsn.tenant_of(self.store.client, msg.id)))

    def run(self) -> int:
        """Work up to batch_size messages (more while `more` says so); returns how many were claimed."""
        handled = 0
        waited = 0.0
        want = self.settings.batch_size
        while not self._stopped():
            if handled >= want:
                if self.span is None or not self.span.more():
                    break
                want += self.settings.batch_size
            seen = self.span.seen_suspects() if self.span is not None else None
            turn: contextlib.AbstractContextManager[bool | None] = (
                self.alone.turn(self.store.client, self.stop, seen) if self.alone else contextlib.nullcontext(True))
            with turn as may:
                if may is None:
                    break
                sent = self.lease_clock()
                claim = self.store.claim(self.owner, want - handled, suspects=may)
                if self.alone is not None:
                    self.alone.claimed(claim.isolated)
                if claim.paused:
                    break
                if claim.wait_s:
                    self.sleep(min(claim.wait_s, MAX_RATE_WAIT_S))
                    continue
                if not claim.ids:
                    pause = self._held_due_in()
                    if pause is None or waited + pause > HOLD_WAIT_BUDGET_S:
                        break
                    self.sleep(pause)
                    waited += pause
                    self.store.promote_due()
                    continue
                self.lease_written = sent
                self.fresh_ids = claim.fresh
                self.journalling = not claim.capped
                handled += len(claim.ids)
                self._work(claim.ids)
                if self.lost:  # it was frozen past its lease: end this job, the next one starts afresh
                    break
        return handled

    def _held_due_in(self) -> float | None:
        """Seconds until the soonest deferred message is due, if that is within HOLD_WAIT_S."""
        due = self.store.next_due()
        if due is None:
            return None
        pause = max(0.0, due - self.clock())
        return pause if pause <= HOLD_WAIT_S else None

    def _work(self, ids: list[str]) -> None:
        pending: list[Outcome] = []
        done: set[str] = set()
        try:  # from the first read after the claim: should any fail, the claim goes back
            # The claim's reads in one round trip: breakers, limited domains, routes and relays,
            # the messages (their tenants with them) and, for the job, the backlog.
            loaded = Loaded(self.store, ids)
            preamble.read(self.store.client, [self.gate, self.relays, loaded,
                                              *([self.span] if self.span is not None else [])])
            self.tenants = loaded.tenants
            for msg_id, msg in zip(ids, loaded.messages, strict=True):
                if not self._place(pending):
                    break
                if self.lost:
                    break
                # (After the place: a wait for it may have outlasted the lease.)
                if not self._still_mine(msg_id):
                    log.warning("lease lapsed (this worker was stopped or frozen) and message %s went to"
                                " another worker: leaving the rest of this claim alone", msg_id)
                    self.lost = True
                    break
                if msg is None:
                    log.error("message %s has no data in Redis; counted as deleted", msg_id,
                              extra={"message_id": msg_id})
                    outcome = Outcome(msg_id, "vanished")
                elif isinstance(msg, Damaged):
                    outcome = msg.outcome()  # logged by the store; quarantined or dropped
                else:
                    self.current = (msg_id, time.monotonic())
                    try:
                        outcome = self.decide(msg)
                    except JobTimeoutException:
                        # The job's time limit struck while this message was being worked:
                        # it takes the strike (unless another lane's has been worked longer),
                        # the rest of the batch goes back untouched.
                        if self.blame is None or self.blame(self):
                            log.warning("message %s outlived the job time limit", msg_id,
                                        extra={"message_id": msg_id})
                            pending.append(Outcome(msg_id, "timeout", info=TIMEOUT_FINDINGS))
                            done.add(msg_id)
                        raise
                    finally:
                        self.current = None
                done.add(msg_id)
                if self.journalling and not self.reports and journal.journalable([outcome]):
                    self._deposit(outcome)  # to the journal with the other lanes' (journalpool)
                    if self.pool.owed() >= journal.JOURNAL_MOST:
                        self._settle(pending, final=True)
                        pending = []
                    if self.lost:
                        break
                    continue
                pending.append(outcome)
                if len(pending) >= self.settings.settle_every:
                    self._settle(pending)
                    pending = []
                    if self.lost:
                        break
        finally:
            # Anything not reached (an exception, a job timeout) goes back, untouched.
            pending += [Outcome(i, "requeue") for i in ids if i not in done]
            self._settle(pending, final=True)

    def _still_mine(self, msg_id: str) -> bool:
        """Whether this worker still holds the message, asked of Redis only when the lease may
        have lapsed since this batch last wrote it (a frozen or stopped worker): then the
        lease is renewed and the message's owner read in one MULTI. Normally no round trip."""
        sent = self.lease_clock()
        if sent - self.lease_written < self.settings.lease_ttl_s * LEASE_CHECK_AFTER:
            return True
        # Safe to repeat: repeated until Redis answers (after a failover, the new master does).
        if not redis_backoff()(renewed_holding, self.store, self.owner, msg_id):
            return False
        self.lease_written = sent
        return True
