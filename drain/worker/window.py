"""The settle window of one worker process: how many messages may be in the relay's hands
without their outcome recorded in Redis, across every lane of the process.

A lane takes a place before it works a message and gives its places back once the outcomes
are settled, so a process killed at any moment has at most DRAIN_SETTLE_EVERY messages that
the relay may have taken but Redis still holds as in flight (they are delivered again after
the lease lapses), however many lanes it runs (drain.worker.lanes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drain.store.store import Store
    from drain.worker.journalpool import JournalPool

# How often a lane waiting for a place looks whether it was told to stop.
STOP_POLL_S = 0.1


def size_for(store: Store) -> int:
    """A process's window: DRAIN_SETTLE_EVERY, or, while every delivery goes to the local
    journal at once (drain/store/localjournal.py), DRAIN_REDIS_JOURNAL_EVERY: then the
    window bounds what a lost host repeats, and a killed process repeats none."""
    local = store.local
    if local is None or local.broken:
        return store.settings.settle_every
    return max(store.settings.settle_every, store.settings.redis_journal_every)


class Window:
    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self.changed = threading.Condition()
        # The lanes' deliveries waiting for the journal, holding places (made by the first batch).
        self.pool: JournalPool | None = None

    def take(self) -> bool:
        """A place if one is free now."""
        with self.changed:
            if self.free <= 0:
                return False
            self.free -= 1
            return True

    def wait(self, stop: threading.Event | None = None, idle: Callable[[], object] | None = None) -> bool:
        """A place once one is free; False if `stop` is set first. `idle` is called (outside
        the lock) each time a wait of STOP_POLL_S ends with no place free."""
        while True:
            with self.changed:
                if self.free > 0:
                    self.free -= 1
                    return True
                if stop is not None and stop.is_set():
                    return False
                if self.changed.wait(STOP_POLL_S) or idle is None:
                    continue
            idle()

    def give(self, count: int) -> None:
        if count <= 0:
            return
        with self.changed:
            self.free = min(self.size, self.free + count)
            self.changed.notify_all()
