"""Several relay sessions in one worker process: a batch job's lanes.

A worker process spends much of each message waiting, for the relay's replies and for
Redis. With DRAIN_RELAY_SESSIONS above 1, a batch job runs that many lanes, one in the job's
own thread and the others in threads of their own, each with its own relay sessions and
claiming and working its own share of the ready mail: while one lane waits on a socket
(Python lets go of the GIL there) another validates or sends.

Limits hold as with one lane. Concurrency caps (domains, relays) and breakers are counted
in Redis (drain.flow.gate, drain.worker.relays). The global and tenant rates are booked when
mail is claimed: every send comes after its claim, so the k-th send overall comes no earlier
than the k-th booking however many lanes (or processes) claim, and lanes run under those
rates as processes do. A domain's rate is booked when it is asked and a second GCRA paces
its actual sends, which lanes side by side could bunch: mail to a domain with a limit is
asked for and sent by one lane of the process at a time (in the order it was booked). The lanes share one settle window
(drain.worker.window), so a killed process repeats no more deliveries than with one lane.
A lane's failure, or the job's time limit striking the job's thread, stops the other lanes
between messages: what they had not reached goes back to ready, and the job ends with the
error as before.

What one lane guarantees, the lanes keep:
- Each lane claims under an owner of its own ("<process owner>/<n>"; the job's thread keeps
  the process's), which lives by the process's lease (keys.lease). A claim whose reply was
  lost (Redis failing over) gives back what Redis holds under that lane's owner: that claim's
  mail, never another lane's (drain.worker.resilience).
- Suspects (mail a dead worker held) are worked alone in the process (drain.worker.alone): a
  lane that sees suspects waiting has the other lanes settle theirs and claim no more, then
  claims with the process to itself; every other claim takes no suspect. A process that dies
  while working a suspect held nothing else, so the strike is earned, as with one lane; a
  process that dies working ordinary mail gives each of its messages a first strike, as one
  lane gives its whole claim.
- The job's time limit (DRAIN_JOB_TIMEOUT): past DEADLINE_SHARE of it no lane starts another
  message, so slow but healthy mail ends the job before the limit. Should the limit strike
  all the same (RQ raises it in the job's thread), every lane is stopped and given GRACE_S to
  finish the message it is on; the lanes still busy then are left behind (their sessions
  are not used again, and close when they end) and their mail is given back, except one
  message: of theirs and the job thread's, the one in progress longest takes the strike.

What remains: a lane left behind that later gets its message through has that message
delivered once more by whoever works it next (its settle is skipped), as with one lane
whose send the time limit cut short; and its deliveries not yet settled (at most the settle
window) are given back, as a killed process's are.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from rq.timeouts import JobTimeoutException

from drain.store.store import Outcome, Store
from drain.worker import dispatch
from drain.worker.alone import Alone
from drain.worker.batch import TIMEOUT_FINDINGS, Batch
from drain.worker.dispatch import Rounds, Span
from drain.worker.window import Window, size_for

if TYPE_CHECKING:
    from drain.worker.runtime import Runtime

log = logging.getLogger(__name__)

# Share of the job's time limit (DRAIN_JOB_TIMEOUT) after which no lane starts another message.
DEADLINE_SHARE = 0.8
# When the time limit strikes, how long the other lanes get to finish the message they are on.
GRACE_S = 1.0


class Lane(threading.Thread):
    """One extra lane: a batch run in its own thread."""

    def __init__(self, batch: Batch, stop: threading.Event) -> None:
        super().__init__(name="drain-lane", daemon=True)
        self.batch = batch
        self.stop = stop
        self.handled = 0
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.abandoned = self.ended = False
        # Set when run() returns. Waited on rather than Thread.join: a join that the time
        # limit's signal interrupts can leave Python taking a live thread for ended (bpo-45274).
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.handled = self.batch.run()
        except BaseException as exc:  # handed to the job's thread, which raises it
            self.error = exc
            self.stop.set()
        finally:
            with self.lock:
                self.ended = True
                if self.abandoned:
                    self.batch.relays.close()
            self.done.set()

    def abandon(self) -> None:
        """Left behind by its job (stuck past the time limit): its sessions close when it ends."""
        with self.lock:
            self.abandoned = True
            if self.ended:
                self.batch.relays.close()


class Judge:
    """Which message takes the strike when the job's time limit strikes (in the job's thread)."""

    def __init__(self, store: Store, lanes: list[Lane], stop: threading.Event) -> None:
        self.store = store
        self.lanes = lanes
        self.stop = stop
        self.judged = False

    def blame(self, own: Batch | None) -> bool:
        """Stop every lane; those that do not finish their message within GRACE_S are left
        behind, their mail given back, except the message in progress longest (the job
        thread's `own` among them), which takes the strike. Whether `own`'s message is it."""
        if self.judged:
            return False
        self.judged = True
        self.stop.set()
        until = time.monotonic() + GRACE_S
        for lane in self.lanes:
            lane.done.wait(max(0.0, until - time.monotonic()))
        stuck = [lane for lane in self.lanes if not lane.done.is_set()]
        working = [(lane.batch.current, lane.batch) for lane in stuck if lane.batch.current is not None]
        if own is not None and own.current is not None:
            working.append((own.current, own))
        guilty = min(working, key=lambda w: w[0][1]) if working else None
        for lane in stuck:
            lane.abandon()
            held = self.store.held().get(lane.batch.owner, [])
            outcomes = [Outcome(i, "requeue") for i in held if guilty is None or i != guilty[0][0]]
            if guilty is not None and guilty[1] is lane.batch and guilty[0][0] in held:
                outcomes.append(Outcome(guilty[0][0], "timeout", info=TIMEOUT_FINDINGS))
                log.warning("message %s outlived the job time limit", guilty[0][0],
                            extra={"message_id": guilty[0][0]})
            self.store.settle(lane.batch.owner, outcomes)
        return guilty is not None and guilty[1] is own


def deliver(rt: Runtime) -> int:
    """Work up to one batch per lane; returns how many messages were claimed in all."""
    rules = rt.rules()
    window = Window(size_for(rt.store))
    stop = threading.Event()
    limited = threading.Lock()
    relays = rt.lanes()
    # Each lane claims under an owner of its own, living by the process's lease (keys.lease).
    owners = [rt.owner, *(f"{rt.owner}/{n}" for n in range(1, len(relays)))]
    batches = [Batch(rt.store, r, o, rt.limits, rt.severity, rules, window=window, stop=stop, limited=limited)
               for r, o in zip(relays, owners, strict=True)]
    alone = Alone() if len(batches) > 1 else None
    deadline = time.monotonic() + rt.settings.job_timeout_s * DEADLINE_SHARE
    rounds = Rounds((dispatch.JOB_ROUNDS - 1) * len(batches))  # shared: the lanes end the job together
    for batch in batches:
        batch.alone, batch.deadline = alone, deadline
        batch.span = Span(rt.store.client, rt.settings, rounds=rounds)
    lanes = [Lane(batch, stop) for batch in batches[1:]]
    judge = Judge(rt.store, lanes, stop)
    if lanes:
        batches[0].blame = judge.blame
    for lane in lanes:
        lane.start()
    try:
        handled = batches[0].run()
        _join(lanes)
    except JobTimeoutException:
        judge.blame(None)  # struck outside a message (waiting for the lanes): judged here
        left = {id(lane.batch.relays) for lane in lanes if lane.abandoned}
        rt.extra = [r for r in rt.extra if id(r) not in left]  # new sessions for the next job
        raise
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
        lane.done.wait()
