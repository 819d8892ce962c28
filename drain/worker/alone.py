"""Suspects are worked alone in their worker process, however many lanes it runs.

A suspect is a message that a dead worker held (drain.store.lua.reap). It is claimed by
itself so that, when the process dies again while working it, the strike it takes is earned:
nothing else was in flight in that process. With lanes (drain.worker.lanes) the other lanes
must hold nothing meanwhile, else a death caused by one lane's message strikes the suspect of
another, an innocent one, towards quarantine.

So the lanes of a process take turns: a lane holds a turn from before its claim until the
claim's outcomes are settled. A lane that sees suspects waiting asks for the process alone:
no lane starts a new claim meanwhile, and once every other lane has settled its own, it
claims (a suspect, if one is still there) with the process to itself. Every other claim
takes no suspect (claim.lua's ARGV[6]), so a suspect is never claimed beside other mail.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import redis

from drain.store import keys

# How often a lane waiting for its turn looks whether it was told to stop.
STOP_POLL_S = 0.1


class Alone:
    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.busy = 0  # lanes holding a turn
        self.alone = False  # the lane holding the only turn may claim (or holds) a suspect
        self.asking = 0  # lanes waiting to have the process alone

    def enter(self, suspects: bool, stop: threading.Event | None) -> bool | None:
        """Take a turn before a claim. `suspects`: whether suspects were seen waiting. Returns
        whether this claim may take a suspect, or None when `stop` was set first."""
        with self.changed:
            if suspects:
                self.asking += 1
                try:
                    while self.busy > 0:
                        if stop is not None and stop.is_set():
                            return None
                        self.changed.wait(STOP_POLL_S)
                finally:
                    self.asking -= 1
                self.busy, self.alone = 1, True
                return True
            while self.alone or self.asking:
                if stop is not None and stop.is_set():
                    return None
                self.changed.wait(STOP_POLL_S)
            self.busy += 1
            return False

    def claimed(self, isolated: bool) -> None:
        """The claim came back: a lane that had the process alone and got no suspect shares it again."""
        with self.changed:
            if self.alone and not isolated:
                self.alone = False
                self.changed.notify_all()

    def leave(self) -> None:
        """The turn's outcomes are settled (or given back)."""
        with self.changed:
            self.busy -= 1
            if self.busy == 0:
                self.alone = False
            self.changed.notify_all()

    @contextlib.contextmanager
    def turn(self, client: redis.Redis, stop: threading.Event | None,
             seen: bool | None = None) -> Iterator[bool | None]:
        """A turn for one claim and its work: whether the claim may take a suspect, None when
        the job is stopping (no turn then). `seen`: whether suspects were waiting, when the
        lane read it with its last claim's reads (drain.worker.preamble); else it is asked."""
        try:
            suspects = bool(client.llen(keys.SUSPECT)) if seen is None else seen
        except (redis.ConnectionError, redis.TimeoutError):
            suspects = False  # the claim meets the outage (drain.worker.resilience)
        may = self.enter(suspects, stop)
        try:
            yield may
        finally:
            if may is not None:
                self.leave()
