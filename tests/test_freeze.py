"""A worker frozen past its lease (SIGSTOP: a stalled VM, a long pause) loses its messages to
the others; when it wakes it must not deliver the rest of its claim a second time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable

from rq.registry import StartedJobRegistry

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink, Stall
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from tests.conftest import wait_for


def test_worker_frozen_past_its_lease_stops_at_its_next_record(
    client: Client, relay: Sink, settings: Settings, work: Callable[..., bool], housekeep: Callable[[], object]
) -> None:
    total = 40
    client.enqueue_many([synthetic(i) for i in range(total)])
    release = threading.Event()

    # The relay holds the 8th message: the worker is mid-batch (20 claimed, 5 recorded).
    relay.set_policy(data_policy=lambda i, _m: Stall(seconds=60, release=release) if i == 7 else None)
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=relay.url,
               DRAIN_BATCH_SIZE="20", DRAIN_SETTLE_EVERY="5", DRAIN_LEASE_TTL="1",
               DRAIN_LOCAL_JOURNAL=settings.local_journal)  # (the host's workers share it)
    proc = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--log-level", "ERROR"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: relay.handler.seen >= 8, what="the worker to reach the held message")
        proc.send_signal(signal.SIGSTOP)
        release.set()  # the relay says 250; the frozen worker will read it when it wakes
        relay.set_policy()
        # Its lease lapses; housekeeping gives its messages to others, who deliver everything.
        wait_for(lambda: (housekeep(), client.store.books().in_flight == 0)[1], what="the lease to lapse")
        work()
        assert client.store.books().delivered == total
        proc.send_signal(signal.SIGCONT)
        # Awake, it finds at its next record that the messages are no longer its own and stops.
        started = StartedJobRegistry(keys.RQ_QUEUE, connection=client.redis)
        wait_for(lambda: started.count == 0, what="the woken worker to end its batch")
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=20)
    books = client.store.books()
    assert books.balanced and books.delivered == total and books.queued == 0
    received = Counter(m.message_id for m in relay.messages)
    assert set(received) == {f"<synthetic-{i}@sender.example.com>" for i in range(total)}
    # Twice: the three it sent after its last record, and at most two more before it noticed.
    assert sum(received.values()) - total <= settings.settle_every

