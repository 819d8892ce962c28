"""Periodic upkeep shared by all workers: one of them does it each round, under a lock.

A round gives a dead worker's messages back, moves due deferred mail to ready, lifts timed
domain pauses that are over, expires waiting mail past its lifetime (and warns of delays),
samples the delivery pace, and keeps enough batch jobs queued.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from drain.flow.gate import unpark_all
from drain.observe.backlog import sample_history
from drain.observe.deferred import drop_stale
from drain.ops.control import lapse
from drain.ops.quarantine import Quarantine
from drain.store import keys
from drain.store.store import Store
from drain.worker import lifetime
from drain.worker.dispatch import ensure_tokens, ready_due

log = logging.getLogger(__name__)

# Deferred mail whose time has come is moved to ready this often (seconds), by every worker.
PROMOTE_EVERY_S = 0.05


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
    reaped, poisoned = store.reap_dead()
    if reaped or poisoned:
        log.warning("dead workers held %d messages: %d to be retried alone, %d quarantined as poison",
                    reaped + poisoned, reaped, poisoned)
    promoted = store.promote_due()
    drop_stale(store, time.time())
    store.age_fresh(store.settings.fresh_max_age_s)
    lapse(store)  # timed domain pauses that are over
    unpark_all(store)
    lifetime.scan(store, force=force)  # waiting mail past its lifetime, delay warnings
    expired = Quarantine(store).expire(store.settings.quarantine_retention_s)
    if expired:
        log.warning("deleted %d quarantined messages held past the retention time", expired)
    store.sample_pace()
    sample_history(store)
    tokens = ensure_tokens(store.client, store.settings)
    return Round(reaped, poisoned, promoted, tokens)


class Housekeeper(threading.Thread):
    """Until stopped: promotes due deferred mail every PROMOTE_EVERY_S (mail held for a rate
    slot must go close to its slot), renews this process's lease, and runs a shared round
    every interval."""

    def __init__(self, store: Store, owner: str, interval_s: float = 1.0) -> None:
        super().__init__(name="drain-housekeeper", daemon=True)
        self.store = store
        self.owner = owner
        self.interval_s = interval_s
        self.stopping = threading.Event()

    def run(self) -> None:
        renew_every = min(self.interval_s, self.store.settings.lease_ttl_s / 3)
        next_round = next_renew = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            try:
                if now >= next_renew:
                    self.store.renew(self.owner)
                    next_renew = now + renew_every
                if now >= next_round:
                    run_once(self.store, self.interval_s)
                    next_round = now + self.interval_s
                else:
                    # Mail due at its booked send time goes to ready, with a batch job for it.
                    ready_due(self.store)
            except Exception as exc:  # Redis away, or anything else: log, keep going
                log.warning("housekeeping failed: %s", exc)
            self.stopping.wait(PROMOTE_EVERY_S)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
