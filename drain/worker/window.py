"""The settle window of one worker process: how many messages may be in the relay's hands
without their outcome recorded in Redis, across every lane of the process.

A lane takes a place before it works a message and gives its places back once the outcomes
are settled, so a process killed at any moment has at most DRAIN_SETTLE_EVERY messages that
the relay may have taken but Redis still holds as in flight (they are delivered again after
the lease lapses), however many lanes it runs (drain.worker.lanes).
"""

from __future__ import annotations

import threading

# How often a lane waiting for a place looks whether it was told to stop.
STOP_POLL_S = 0.1


class Window:
    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self.changed = threading.Condition()

    def take(self) -> bool:
        """A place if one is free now."""
        with self.changed:
            if self.free <= 0:
                return False
            self.free -= 1
            return True

    def wait(self, stop: threading.Event | None = None) -> bool:
        """A place once one is free; False if `stop` is set first."""
        with self.changed:
            while self.free <= 0:
                if stop is not None and stop.is_set():
                    return False
                self.changed.wait(STOP_POLL_S)
            self.free -= 1
            return True

    def give(self, count: int) -> None:
        if count <= 0:
            return
        with self.changed:
            self.free = min(self.size, self.free + count)
            self.changed.notify_all()
