"""Several relay sessions in one worker process: a batch job's lanes.

A worker process spends much of each message waiting, for the relay's replies and for
Redis. With DRAIN_RELAY_SESSIONS above 1, a batch job runs that many lanes, one in the job's
own thread and the others in threads of their own, each with its own relay sessions and
claiming and working its own share of the ready mail: while one lane waits on a socket
(Python lets go of the GIL there) another validates or sends.

Limits hold as with one lane. Concurrency caps (domains, relays) and breakers are counted
in Redis (drain.flow.gate, drain.worker.relays). Rates are booked in Redis too, but the
global and tenant rates when mail is claimed and a domain's when it is asked, so sends that
run side by side could land closer together than booked: while a global or tenant rate is
set a job runs one lane, and mail to a domain with a limit is asked for and sent by one lane
of the process at a time (in the order it was booked). The lanes share one settle window
(drain.worker.window), so a killed process repeats no more deliveries than with one lane.
A lane's failure, or the job's time limit striking the job's thread, stops the other lanes
between messages: what they had not reached goes back to ready, and the job ends with the
error as before.

Why it is off by default (DRAIN_RELAY_SESSIONS=1), what a process with lanes does not do as
one lane does: a process that dies holds a message in each lane, and each takes a strike
towards quarantine as poison (one of them innocent); the job's time limit strikes only the
message of the job's own thread; and a claim whose reply was lost (Redis failing over) gives
back every message the process holds, the other lanes' too, which those lanes then deliver
while they go to ready again (a repeat beyond the settle window).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from drain.flow import ratelimit
from drain.store import keys
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
    limited = threading.Lock()
    relays = rt.lanes()
    if len(relays) > 1 and _rated(rt):
        relays = relays[:1]
    batches = [Batch(rt.store, r, rt.owner, rt.limits, rt.severity, rules, window=window, stop=stop, limited=limited)
               for r in relays]
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


def _rated(rt: Runtime) -> bool:
    """Whether a global or tenant rate is set (claims book them: one lane then)."""
    pipe = rt.store.client.pipeline(transaction=False)
    pipe.get(keys.RATE)
    pipe.hlen(keys.TENANT_RATES)
    rate, tenants = pipe.execute()
    return ratelimit.stored_rate(rate) is not None or int(tenants) > 0


def _join(lanes: list[Lane]) -> None:
    for lane in lanes:
        lane.join()
