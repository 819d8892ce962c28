"""The deliveries of every lane of a worker process waiting for the delivery journal, written
together (drain/store/journal.py; the lanes share their process's journal, keys.journal).

Each write to the journal is a round trip, and Redis pays for each round trip (a wake-up of
its event loop, a read and a write on the socket) several times what the write itself costs.
A lane used to journal its own deliveries when it needed a place in the process's settle
window (drain/worker/window.py) and found none: with two lanes sharing a window of three,
about two writes for three messages. Now a lane hands each delivery to the pool as soon as
it has the relay's reply, with the place it took for it, and goes on; the lane that finds
no place free writes what every lane handed in (one RPUSH) and gives their places back.
The window is unchanged: a delivery in the pool still holds its place until it is written,
so a killed process repeats at most DRAIN_SETTLE_EVERY deliveries, as before.

A lane that ends its claim takes back what it handed in and not yet written (`withdraw`)
and settles it with the rest of its claim, and the journal with it (deliver.lua settles the
deliveries of every lane of the process found there). `flushing` is held while a write is
on the wire: a lane withdraws only between writes, so whatever a write carried is in the
journal when its settle reads it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from drain.store.store import Outcome, Store

# How long a lane that finds no place free waits for the other lanes' messages in progress
# to be handed in, so that one write carries the whole window rather than all but theirs.
HANDOFF_WAIT_S = 0.002
# A wait that ran out (the other lanes' sends are slow: a relay far away) is not tried again
# for the next 1, 2, 4 ... up to this many flushes; one that did not run out starts over.
HANDOFF_SKIP_MOST = 16


class JournalPool:
    def __init__(self, store: Store, give: Callable[[int], None]) -> None:
        self.store = store
        # Gives places back to the settle window.
        self.give = give
        self.lock = threading.Lock()  # guards waiting, places, written and writes
        self.flushing = threading.Lock()
        # Told of every deposit and write (see `flush_full`); writes: how many so far.
        self.changed = threading.Condition(self.lock)
        self.writes = 0
        # flush_full's waits still to skip, the next skip after one runs out, how many ran out.
        self.skip, self.backoff, self.ran_out = 0, 1, 0
        # Per owner (lane): deliveries handed in and not yet written; the window places they hold.
        self.waiting: dict[str, list[Outcome]] = {}
        self.places: dict[str, int] = {}
        # Deliveries written to the process's journal since it was last settled.
        self.written = 0

    def deposit(self, owner: str, outcome: Outcome, places: int) -> None:
        """A lane's delivery, with the window places it holds for it (given back once written)."""
        with self.lock:
            self.waiting.setdefault(owner, []).append(outcome)
            self.places[owner] = self.places.get(owner, 0) + places
            self.changed.notify_all()

    def owed(self) -> int:
        """Deliveries in the pool or in the journal, not yet settled."""
        with self.lock:
            return sum(len(o) for o in self.waiting.values()) + self.written

    def flush(self) -> int:
        """Journal every delivery waiting, in one round trip, and give their places back;
        returns how many. On an error they stay in the pool (their lanes settle them)."""
        with self.flushing:
            with self.lock:
                if not self.waiting:
                    return 0
                taken, places, first = self.waiting, self.places, not self.written
                self.waiting, self.places = {}, {}
            try:
                self.store.journal_many([(owner, outcomes, first) for owner, outcomes in taken.items()])
            except BaseException:
                with self.lock:
                    for owner, outcomes in taken.items():
                        self.waiting[owner] = outcomes + self.waiting.get(owner, [])
                        self.places[owner] = places.get(owner, 0) + self.places.get(owner, 0)
                raise
            count = sum(len(o) for o in taken.values())
            with self.lock:
                self.written += count
                self.writes += 1
                self.changed.notify_all()
        self.give(sum(places.values()))
        return count

    def flush_full(self, places: int, within_s: float | None = None) -> int:
        """flush, once the deliveries waiting hold `places` places (the caller's lane holds
        the rest of the window: no other lane is in the middle of a message, whose delivery
        the write can carry too), or another lane has written, or within_s has passed (a
        slow send, or a lane holding other outcomes, is not waited for; after a wait runs
        out, the next few flush at once: see HANDOFF_SKIP_MOST)."""
        with self.changed:
            if self.skip > 0:
                self.skip -= 1
            else:
                writes = self.writes
                if self.changed.wait_for(lambda: sum(self.places.values()) >= places or self.writes != writes,
                                         timeout=HANDOFF_WAIT_S if within_s is None else within_s):
                    self.backoff = 1
                else:
                    self.ran_out += 1
                    self.skip, self.backoff = self.backoff, min(self.backoff * 2, HANDOFF_SKIP_MOST)
        return self.flush()

    def withdraw(self, owner: str) -> tuple[list[Outcome], int, int]:
        """Take back owner's deliveries not yet written and the places they hold, for its
        settle, and how many are in the journal: that settle settles them too."""
        with self.flushing, self.lock:
            written, self.written = self.written, 0
            self.writes += 1  # (a lane waiting in flush_full for these waits no longer)
            self.changed.notify_all()
            return self.waiting.pop(owner, []), self.places.pop(owner, 0), written
