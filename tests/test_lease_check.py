"""A worker that wakes after its lease lapsed checks ownership before its next send, so it does
not deliver the rest of a settle group it no longer owns (the check costs no round trip while
the lease is fresh)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import redis

from drain import validate
from drain.demo.seeding import synthetic
from drain.demo.sink import Received, Sink
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from drain.worker.batch import Batch
from drain.worker.delivery import Relay, RelayConfig

OWNER = "frozen-worker"


class Clock:
    """The batch's lease clock, moved by hand: a freeze is a jump."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_worker_woken_past_its_lease_stops_before_its_next_send(
        client: Client, relay: Sink, rclient: redis.Redis, settings: Settings, work: Callable[..., bool]) -> None:
    total = 10  # two settle groups of five (conftest: settle_every=5, batch_size=20)
    client.enqueue_many([synthetic(i) for i in range(total)])
    clock = Clock()

    def freeze_during_first_send(index: int, _msg: Received) -> None:
        if index == 0:
            # While the first DATA is on its way the worker is frozen past its lease:
            # the lease lapses and housekeeping gives its messages to the others.
            rclient.delete(keys.lease(OWNER))
            assert client.store.reap_dead() == (total, 0)
            clock.now += settings.lease_ttl_s * 3
        return None

    relay.set_policy(data_policy=freeze_during_first_send)
    sender = Relay(RelayConfig.from_url(settings.relay), timeout_s=5.0)
    try:
        batch = Batch(client.store, sender, OWNER, validate.Limits(), lease_clock=clock)
        assert batch.run() == total
    finally:
        sender.close()
    assert batch.lost
    # Only the message whose DATA was under way when it froze went out; the other four of its
    # settle group did not (before the check they did, found only at the settle).
    assert relay.accepted == 1

    relay.set_policy()
    work()
    books = client.store.books()
    assert books.delivered == total and books.queued == 0 and books.balanced
    repeats = Counter(m.message_id for m in relay.messages)
    assert sum(repeats.values()) == total + 1 and repeats["<synthetic-0@sender.example.com>"] == 2


def test_a_fresh_lease_costs_no_round_trip(client: Client, relay: Sink, settings: Settings,
                                           rclient: redis.Redis) -> None:
    client.enqueue_many([synthetic(i) for i in range(20)])
    rclient.config_resetstat()
    sender = Relay(RelayConfig.from_url(settings.relay), timeout_s=5.0)
    try:
        assert Batch(client.store, sender, "awake-worker", validate.Limits(), lease_clock=Clock()).run() == 20
    finally:
        sender.close()
    stats = rclient.info("commandstats")
    # No MULTI (SET lease + HGET owner) for the ownership check: the claim wrote the lease.
    assert "cmdstat_multi" not in stats and relay.accepted == 20
