"""Periodic upkeep shared by all workers: one of them does it each round, under a lock.

A round gives a dead worker's messages back, moves due deferred mail to ready, lifts timed
domain pauses that are over, expires waiting mail past its lifetime (and warns of delays),
samples the delivery pace, and keeps enough batch jobs queued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import redis

from drain.flow.gate import unpark_all
from drain.observe.backlog import sample_history
from drain.observe.deferred import drop_stale
from drain.ops.control import lapse
from drain.ops.quarantine import Quarantine
from drain.store import keys
from drain.store.localjournal import RECOVER_EVERY_S
from drain.store.store import Store
from drain.worker import lifetime
from drain.worker.audit import AUDIT_EVERY_S, Ledger, audit
from drain.worker.dispatch import ensure_tokens, ready_due
from drain.worker.duewatch import watch_of

log = logging.getLogger(__name__)
T = TypeVar("T")

# Deferred mail whose time has come is moved to ready this often (seconds), by every worker.
PROMOTE_EVERY_S = 0.05
# A housekeeper that another's fresh reading spared wakes this long after it has aged.
POLL_SLACK_S = 0.01
# While housekeeping keeps failing (Redis away), one log line this often (seconds).
FAILURE_LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class Round:
    reaped: int = 0
    poisoned: int = 0
    promoted: int = 0
    tokens: int = 0


def run_once(store: Store, interval_s: float = 1.0, force: bool = False) -> Round | None:
    """One round, unless another worker ran one within interval_s (then None)."""
    if not force and not store.client.set(keys.HOUSEKEEPING_LOCK, b"1", nx=True, px=int(interval_s * 1000)):
        return None
    local = store.local
    if local is not None:  # a dead process of this host: its local journal first, then the reaper
        _step("copy dead processes' local journals", lambda: local.recover(store.client), 0)
    reaped, poisoned = _step("give back dead workers' mail", store.reap_dead, (0, 0))
    if reaped or poisoned:
        log.warning("dead workers held %d messages: %d to be retried alone, %d quarantined as poison",
                    reaped + poisoned, reaped, poisoned)
    _step("adopt ready mail of an older drain", store.adopt_legacy, 0)
    promoted = _step("promote due deferred mail", store.promote_due, 0)
    _step("drop stale held ids", lambda: drop_stale(store, time.time()), None)
    _step("age fresh mail", lambda: store.age_fresh(store.settings.fresh_max_age_s), 0)
    _step("lift timed domain pauses that are over", lambda: lapse(store), None)
    _step("move parked mail back", lambda: unpark_all(store), None)
    _step("expire waiting mail past its lifetime", lambda: lifetime.scan(store, force=force), None)
    expired = _step("expire quarantine",
                    lambda: Quarantine(store).expire(store.settings.quarantine_retention_s), 0)
    if expired:
        log.warning("deleted %d quarantined messages held past the retention time", expired)
    _step("sample the pace", store.sample_pace, None)
    _step("sample the books' history", lambda: sample_history(store), False)
    tokens = _step("queue batch jobs", lambda: ensure_tokens(store.client, store.settings), 0)
    return Round(reaped, poisoned, promoted, tokens)


def _step(name: str, action: Callable[[], T], default: T) -> T:
    """One step of a round. A damaged key (a wrong type, a value that cannot be read) fails
    that step alone, logged with what is wrong, and the others still run; Redis gone ends
    the round (every step would fail the same way)."""
    try:
        return action()
    except (redis.ConnectionError, redis.TimeoutError):
        raise
    except Exception as exc:
        log.error("housekeeping: %s failed (%s: %s); the other steps go on", name, type(exc).__name__, exc)
        return default


class Housekeeper(threading.Thread):
    """Until stopped: promotes due deferred mail every PROMOTE_EVERY_S (mail held for a rate
    slot must go close to its slot), renews this process's lease, runs a shared round every
    interval and, given the process's ledger, audits what Redis says it holds every
    audit_every_s (drain.worker.audit)."""

    def __init__(self, store: Store, owner: str, interval_s: float = 1.0, ledger: Ledger | None = None,
                 audit_every_s: float = AUDIT_EVERY_S) -> None:
        super().__init__(name="drain-housekeeper", daemon=True)
        self.store = store
        self.owner = owner
        self.interval_s = interval_s
        self.ledger = ledger
        self.audit_every_s = audit_every_s
        self.stopping = threading.Event()
        self.watch = watch_of(store.client)  # the lanes' readings of the deferred mail (this host's pool)
        self.polls = 0  # times it asked Redis whether deferred mail is due

    def run(self) -> None:
        renew_every = min(self.interval_s, self.store.settings.lease_ttl_s / 3)
        next_round = next_renew = next_recover = 0.0
        next_audit = time.monotonic() + self.audit_every_s
        failures, logged_at = 0, 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            pause = PROMOTE_EVERY_S
            try:
                if now >= next_renew:
                    self.store.renew(self.owner)
                    next_renew = now + renew_every
                if self.store.local is not None and now >= next_recover:
                    next_recover = now + min(RECOVER_EVERY_S, self.store.settings.lease_ttl_s / 4)
                    self.store.local.recover(self.store.client)  # dead processes' local journals
                if now >= next_round:
                    run_once(self.store, self.interval_s)
                    next_round = now + self.interval_s
                elif self.ledger is not None and now >= next_audit:
                    next_audit = now + self.audit_every_s
                    audit(self.store, self.owner, self.ledger, now)
                elif quiet := self.watch.quiet_for(now, PROMOTE_EVERY_S, time.time()):
                    # A lane's claim read the deferred mail less than PROMOTE_EVERY_S ago and
                    # nothing in it is due yet: no need to ask again before that reading is as
                    # old as one of ours would be, or its soonest mail is due; a little after,
                    # so that the process whose poll it was, on time, polls for the host.
                    pause = min(quiet + POLL_SLACK_S, PROMOTE_EVERY_S)
                else:
                    # Mail due at its booked send time goes to ready, with a batch job for it.
                    # The reading is shared with this host's other worker processes.
                    self.polls += 1
                    asked = time.monotonic()
                    due = self.store.next_due()
                    self.watch.saw(due, asked)
                    if due is not None and due <= time.time():
                        ready_due(self.store)
            except Exception as exc:  # Redis away, or anything else: log, keep going
                # It retries every PROMOTE_EVERY_S: one line when it starts failing, then one
                # every FAILURE_LOG_EVERY_S, not twenty a second for as long as Redis is away.
                failures += 1
                if failures == 1 or now - logged_at >= FAILURE_LOG_EVERY_S:
                    log.warning("housekeeping failed (%d attempts so far, retrying every %.2f s): %s",
                                failures, PROMOTE_EVERY_S, exc)
                    logged_at = now
            else:
                if failures:
                    log.warning("housekeeping works again after %d failed attempts", failures)
                    failures = 0
            self.stopping.wait(pause)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
