"""A worker process's self-audit: mail Redis holds under this process's name that none of its
batches is working any more.

How it comes about: Redis replication is asynchronous, so a settle the old master
acknowledged between a replica's promotion and its own demotion (a Sentinel failover) is
lost with it. The new master still holds the settled messages in flight under the worker's
owner, and the reaper never takes them: the worker is alive and renews its lease. Before this
audit they stayed there until the worker restarted.

How it is healed:
- The worker's store (AuditedStore) keeps the process's Ledger: the ids each owner (a lane)
  claimed and has not settled yet (a journalled id until the owner's next settle, which
  settles its journal), and the outcome of each message settled or journalled that is worth
  settling again (delivered, deferred, bounced: the Outcome as it was sent). The last
  RECENT_MOST outcomes are kept.
- Every AUDIT_EVERY_S the housekeeper reads who holds what once (Store.held: one HGETALL of
  the in-flight owners, the read the reaper makes every round) and keeps the ids held under
  this process's owners (its lanes) that no live batch of the process holds. An id found so
  on reads at least GRACE_S apart, and not claimed again in between, is stuck.
- A stuck id whose outcome is known is settled again with it: a delivered message is counted
  delivered, not sent again. Any other is given back to ready, untouched (settle.lua's
  requeue). Either way it is one settle call per lane owner, which applies only to mail that
  owner still holds, and settles the owner's journal first (journalled ids count as delivered,
  as the reaper does for a dead worker).

Cost: one HGETALL per process every AUDIT_EVERY_S (O(mail in flight in all), the read the
reaper makes every second: ~60-90 us of Redis CPU for 1,000 ids in flight, ~380-520 us for
5,000), under 1 us of the worker's CPU per message for the ledger, and nothing more unless
something is stuck (scripts/bench_audit.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from drain.settings import Settings
from drain.store.store import Claim, Outcome, Store
from drain.worker.resilience import ResilientStore

log = logging.getLogger(__name__)

# How often a worker process audits what Redis says it holds (seconds).
AUDIT_EVERY_S = 5.0
# How long an id must be held under the process's name by none of its batches to be healed.
GRACE_S = 10.0
# Most outcomes kept for settling again (~350 bytes each, ~10 MB in all): a heal comes at most
# GRACE_S + AUDIT_EVERY_S after the loss, so outcomes are known up to 2,000 msg/s per process.
RECENT_MOST = 30_000
# Outcomes worth settling again; any other kind goes back to ready and is worked anew.
KEPT = frozenset({"delivered", "deferred", "bounced"})


@dataclass(frozen=True)
class Healed:
    """What one audit did: ids settled again with their known outcome, ids given back to
    ready, and of both those the settle skipped (no longer held, or settled by the journal)."""

    again: int = 0
    back: int = 0
    skipped: int = 0


class Ledger:
    """What the batches of one process hold and what they recently settled, by owner (thread
    safe: the lanes and the housekeeper share it). AuditedStore keeps it as they go."""

    def __init__(self, most: int = RECENT_MOST, grace_s: float = GRACE_S) -> None:
        self.most = most
        self.grace_s = grace_s
        self.lock = threading.Lock()
        # Ids claimed and not yet settled, by owner, and of those the ones journalled (live
        # until the owner's next settle, which settles its journal).
        self.live: dict[str, set[str]] = {}
        self.journal: dict[str, set[str]] = {}
        self.recent: OrderedDict[str, Outcome] = OrderedDict()
        # Ids found held by no live batch: when they were first found so.
        self.suspects: dict[str, float] = {}

    def claimed(self, owner: str, ids: Sequence[str]) -> None:
        with self.lock:
            self.live.setdefault(owner, set()).update(ids)
            for i in ids:
                self.suspects.pop(i, None)
                self.recent.pop(i, None)  # an outcome of an earlier claim says nothing of this one

    def journalled(self, owner: str, outcomes: Sequence[Outcome]) -> None:
        with self.lock:
            self._keep(outcomes)
            self.journal.setdefault(owner, set()).update(o.id for o in outcomes)

    def settled(self, owner: str, outcomes: Sequence[Outcome]) -> None:
        """Outcomes about to be settled (the owner's journal with them)."""
        with self.lock:
            self._keep(outcomes)
            live = self.live.get(owner)
            if live is not None:
                live.difference_update(o.id for o in outcomes)
                live.difference_update(self.journal.pop(owner, ()))
                if not live:
                    del self.live[owner]

    def _keep(self, outcomes: Sequence[Outcome]) -> None:
        for o in outcomes:
            if o.kind not in KEPT:
                self.recent.pop(o.id, None)
                continue
            self.recent[o.id] = o
            self.recent.move_to_end(o.id)
        while len(self.recent) > self.most:
            self.recent.popitem(last=False)

    def stuck(self, held: dict[str, list[str]], now: float) -> dict[str, list[str]]:
        """Of `held` (owner -> ids, this process's owners only), the ids that no live batch of
        their owner held on any read since one at least grace_s ago, by owner."""
        found: dict[str, list[str]] = {}
        with self.lock:
            suspects: dict[str, float] = {}
            for owner, ids in held.items():
                live = self.live.get(owner, set())
                for i in ids:
                    if i in live:
                        continue
                    since = suspects[i] = self.suspects.get(i, now)
                    if now - since >= self.grace_s:
                        found.setdefault(owner, []).append(i)
            self.suspects = suspects  # ids settled or claimed again meanwhile drop out
        return found

    def outcomes(self, ids: Sequence[str]) -> list[Outcome]:
        """Each id's known outcome, or a requeue (back to ready, untouched)."""
        with self.lock:
            for i in ids:
                self.suspects.pop(i, None)
            return [self.recent.get(i) or Outcome(i, "requeue") for i in ids]


class AuditedStore(ResilientStore):
    """The worker's Store, keeping its process's Ledger: what is claimed, journalled, settled."""

    def __init__(self, client: redis.Redis, settings: Settings, ledger: Ledger | None = None) -> None:
        super().__init__(client, settings)
        self.ledger = ledger or Ledger()

    def claim(self, owner: str, want: int, *args: Any, **kwargs: Any) -> Claim:
        claim = super().claim(owner, want, *args, **kwargs)
        self.ledger.claimed(owner, claim.ids)
        return claim

    def journal(self, owner: str, outcomes: Sequence[Outcome], first: bool) -> None:
        self.ledger.journalled(owner, outcomes)
        super().journal(owner, outcomes, first)

    def journal_many(self, journals: Sequence[tuple[str, Sequence[Outcome], bool]]) -> None:
        for owner, outcomes, _first in journals:  # (the lanes' journal pool: drain.worker.journalpool)
            self.ledger.journalled(owner, outcomes)
        super().journal_many(journals)

    def settle(self, owner: str, outcomes: Any) -> tuple[int, int]:
        self.ledger.settled(owner, outcomes)
        return super().settle(owner, outcomes)

    def commit(self, owner: str) -> tuple[int, int]:
        self.ledger.settled(owner, [])
        return super().commit(owner)


def mine(held: dict[str, list[str]], owner: str) -> dict[str, list[str]]:
    """The owners of a process: its own and its lanes' ("<owner>/<n>", drain.worker.lanes)."""
    return {o: ids for o, ids in held.items() if o == owner or o.startswith(owner + "/")}


def audit(store: Store, owner: str, ledger: Ledger, now: float | None = None) -> Healed:
    """Heal mail held under this process's name by none of its batches (see the module)."""
    stuck = ledger.stuck(mine(store.held(), owner), time.monotonic() if now is None else now)
    again = back = skipped = 0
    for lane, ids in stuck.items():
        outcomes = ledger.outcomes(ids)  # (settled again through an AuditedStore, kept for another try)
        known = sum(o.kind != "requeue" for o in outcomes)
        _settled, missed = store.settle(lane, outcomes)
        again, back, skipped = again + known, back + len(ids) - known, skipped + missed
    if stuck:
        log.warning("self-audit: %d message(s) were held under this worker's name by none of its batches"
                    " (a settle lost in a Redis failover?): %d settled again with their known outcome,"
                    " %d given back to ready, %d no longer held or settled by the journal",
                    again + back, again, back, skipped)
    return Healed(again, back, skipped)
