"""A worker killed with SIGKILL mid-batch loses nothing: its messages return to ready once
its lease lapses, and another worker delivers them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from drain.demo.seeding import synthetic
from drain.demo.sink import Received, Sink, Stall
from drain.intake.api import Client
from drain.settings import Settings
from tests.conftest import wait_for


def kill_mid_batch(client: Client, relay: Sink, settings: Settings, **env: str) -> None:
    """Run `drain worker` in a process (batches of 20, lease 1 s, `env` on top); the relay
    takes 7 messages, then stalls on the 8th: the worker is mid-batch when it is SIGKILLed."""
    release = threading.Event()

    def policy(index: int, _msg: Received) -> Stall | None:
        return Stall(seconds=60, release=release) if index == 7 else None

    relay.set_policy(data_policy=policy)
    environ = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=relay.url,
                   DRAIN_BATCH_SIZE="20", DRAIN_LEASE_TTL="1",
                   **{"DRAIN_LOCAL_JOURNAL": settings.local_journal, **env})
    proc = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--log-level", "WARNING"], env=environ,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: relay.handler.seen >= 8, what="the worker to reach the stalled message")
        in_flight = client.store.books().in_flight
        assert in_flight > 0
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        release.set()
    relay.set_policy()


def test_sigkill_mid_batch_loses_nothing(
    client: Client, relay: Sink, settings: Settings, work: Callable[..., bool], housekeep: Callable[[], object]
) -> None:
    total = 60
    client.enqueue_many([synthetic(i) for i in range(total)])
    kill_mid_batch(client, relay, settings, DRAIN_SETTLE_EVERY="5")

    # Nothing is lost while the dead worker's lease runs out: the books still balance.
    assert client.store.books().balanced
    wait_for(lambda: (housekeep(), client.store.books().in_flight == 0)[1], what="the lease to lapse")

    work()
    books = client.store.books()
    assert books.delivered == total and books.queued == 0
    delivered_ids = {m.message_id for m in relay.messages}
    assert delivered_ids == {f"<synthetic-{i}@sender.example.com>" for i in range(total)}
    # At most the messages delivered but not yet settled when it died were sent twice.
    assert len(relay.messages) - total <= settings.settle_every
