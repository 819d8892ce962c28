"""Several relay sessions in one worker process: a batch job's lanes.

A worker process spends much of each message waiting, for the relay's replies and for
Redis. With DRAIN_RELAY_SESSIONS above 1, a batch job runs that many lanes, one in the job's
own thread and the others in threads of their own, each with its own relay sessions and
claiming and working its own share of the ready mail: while one lane waits on a socket
(Python lets go of the GIL there) another validates or sends.

Every limit holds as it does between processes: the global rate is taken by the claim,
domain rates and caps, breakers and relay caps are counted in Redis (drain.flow.gate,
drain.worker.relays). The lanes share one settle window (drain.worker.window), so a killed
process repeats no more deliveries than with one lane. A lane's failure, or the job's time
limit striking the job's thread, stops the other lanes between messages: what they had not
reached goes back to ready, and the job ends with the error as before.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from drain.worker.batch import Batch
from drain.worker.window import Window

if TYPE_CHECKING:
    from drain.worker.runtime import Runtime


class Lane(threading.Thread):
    """One extra lane: a batch run in its own thread."""

    def __init__(self, batch: Batch, stop: threading.Event) -> None:
        super().__init__(name="drain-lane", daemon=True)
        self.batch = batch
        self.stop = stop
        self.handled = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.handled = self.batch.run()
        except BaseException as exc:  # handed to the job's thread, which raises it
            self.error = exc
            self.stop.set()


def deliver(rt: Runtime) -> int:
    """Work up to one batch per lane; returns how many messages were claimed in all."""
    rules = rt.rules()
    window = Window(rt.settings.settle_every)
    stop = threading.Event()
    batches = [Batch(rt.store, relays, rt.owner, rt.limits, rt.severity, rules, window=window, stop=stop)
               for relays in rt.lanes()]
    lanes = [Lane(batch, stop) for batch in batches[1:]]
    for lane in lanes:
        lane.start()
    try:
        handled = batches[0].run()
        _join(lanes)
    except BaseException:
        stop.set()
        _join(lanes)
        raise
    for lane in lanes:
        if lane.error is not None:
            raise lane.error
    return handled + sum(lane.handled for lane in lanes)


def _join(lanes: list[Lane]) -> None:
    for lane in lanes:
        lane.join()
