"""How a batch settles what it worked (drain.worker.batch's Batch takes it from Settling): a
place in the process's settle window before each message, deliveries handed to the lanes'
journal pool (drain.worker.journalpool) as they come, other outcomes settled every
DRAIN_SETTLE_EVERY messages, and everything, the owner's journal included, at the end of
the claim."""

from __future__ import annotations

import logging
import threading
import time

from drain.message import Envelope
from drain.settings import Settings
from drain.store import journal
from drain.store.store import Outcome, Store, Stored
from drain.worker import dsn
from drain.worker.journalpool import JournalPool
from drain.worker.tally import Tally
from drain.worker.window import Window

log = logging.getLogger("drain.worker.batch")


class Settling:
    # (Set by Batch.)
    store: Store
    settings: Settings
    owner: str
    window: Window
    pool: JournalPool
    # Places taken in the window for messages not settled (nor handed to the pool) yet.
    taken: int
    journalling: bool
    lost: bool
    tally: Tally
    reports: list[tuple[Stored, dict[str, str], str]]
    stop: threading.Event | None
    deadline: float | None

    def _stopped(self) -> bool:
        return ((self.deadline is not None and time.monotonic() >= self.deadline)
                or (self.stop is not None and self.stop.is_set()))

    def _place(self, pending: list[Outcome]) -> bool:
        """A place in the settle window for the next message: when none is free, this lane's
        own outcomes are settled first (giving its places back), then it waits for one.
        False when the job is stopping (the rest of the claim goes back untouched)."""
        if self._stopped():
            return False
        if not self.window.take():
            # Every lane's deliveries waiting (those of lanes about to hand theirs in too, within
            # a short wait): journalled, their places given back.
            self.pool.flush_full(self.window.size - self.taken)
            if pending:
                self._settle(pending)
                pending.clear()
                if self.lost:
                    return True  # the caller sees `lost` and leaves the rest alone
            if not self.window.wait(self.stop, self.pool.flush):
                return False
        self.taken += 1
        return True

    def _send_reports(self) -> None:
        if not self.reports:
            return
        items = [(dsn.build(m.raw, m.envelope, failed, m.id, self.settings.hostname, m.accepted_at),
                  Envelope("", (m.envelope.sender,)), None) for m, failed, _t in self.reports]
        tenants, self.reports = [t for _m, _f, t in self.reports], []  # booked under the original's tenant
        self.store.enqueue_many(items, source="dsn", tenants=tenants)

    def _settle(self, outcomes: list[Outcome], final: bool = False) -> None:
        """Settle outcomes (and the journal); deliveries go to the journal instead, unless
        `final` (the claim is done: everything is settled)."""
        if not final and self.journalling and journal.journalable(outcomes):
            self._journal(outcomes)
            return
        journalled, mine = 0, list[Outcome]()
        if final:  # this lane's deliveries still in the pool are settled here, with its journal
            mine, places, journalled = self.pool.withdraw(self.owner)
            outcomes, self.taken = mine + outcomes, self.taken + places
        if not outcomes and not journalled:
            self.window.give(self.taken)
            self.taken = 0
            if final and self.store.local is not None:
                self.store.local.clear(self.owner)
            return
        try:
            if outcomes:
                _settled, skipped = self.store.settle(self.owner, outcomes)
            else:
                _settled, skipped = self.store.commit(self.owner)
        finally:
            taken, self.taken = self.taken, 0
            self.window.give(taken)
        if final and self.store.local is not None:
            self.store.local.clear(self.owner)  # every delivery of this lane is settled in Redis
        self._send_reports()
        if skipped:
            log.warning("%d outcomes skipped: their lease lapsed and they went back to ready", skipped)
            self.lost = True
        for outcome in outcomes[len(mine) if final else 0:]:  # (those of the pool were counted)
            self.tally.add(outcome)

    def _journal(self, outcomes: list[Outcome]) -> None:
        """Deliveries to the journal at once (with what the other lanes have waiting): from then
        on they count as settled (never sent again)."""
        places, self.taken = self.taken, 0
        self._on_disk(outcomes)
        for outcome in outcomes:
            self.pool.deposit(self.owner, outcome, places)
            places = 0
        self.pool.flush()
        self._send_reports()
        for outcome in outcomes:
            self.tally.add(outcome)
        if self.pool.owed() >= journal.JOURNAL_MOST:
            self._settle([], final=True)

    def _deposit(self, outcome: Outcome) -> None:
        """A delivery to the local journal, then to the pool with its place: journalled in
        Redis when some lane next needs a place (at once if the local journal failed)."""
        at_once = not self._on_disk([outcome])
        self.pool.deposit(self.owner, outcome, 1)
        self.taken -= 1
        self.tally.add(outcome)
        if at_once:
            self.pool.flush()

    def _on_disk(self, outcomes: list[Outcome]) -> bool:
        """Write deliveries to the lane's local journal (drain/store/localjournal.py). False
        when that failed and the window is wider than DRAIN_SETTLE_EVERY (it was sized for the
        local journal): the caller journals them in Redis at once."""
        local = self.store.local
        if local is None:
            return True
        entries = [journal.entry(o, self.settings.trace, self.store.figures.get(o.id)) for o in outcomes]
        return local.append(self.owner, entries) or self.window.size <= self.settings.settle_every
