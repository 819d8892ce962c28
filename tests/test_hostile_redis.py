"""drain's global keys in Redis with the wrong type or a value that makes no sense: what
was accepted stays accepted exactly once, and upkeep goes on around the damage."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from drain import validate
from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from drain.worker.batch import Batch
from drain.worker.delivery import Relay, RelayConfig


def test_enqueue_stored_is_reported_as_stored_when_the_batch_job_cannot_be_queued(
        client: Client, rclient: redis.Redis) -> None:
    """The message is stored before its batch job is queued. When queueing the job fails
    (here: drain:rate of the wrong type), the producer got a raw redis ResponseError for a
    message drain holds: it would send it again, a second copy."""
    rclient.hset(keys.RATE, "x", "1")

    msg_id = client.enqueue(synthetic(1))
    result = client.enqueue_many([synthetic(2), synthetic(3)])

    assert msg_id and len(result.ids) == 2 and not result.rejected
    assert client.store.books().accepted == 3


def test_one_damaged_key_does_not_stop_the_rest_of_housekeeping(
        client: Client, rclient: redis.Redis, relay: Sink, work: Callable[..., bool],
        caplog: pytest.LogCaptureFixture) -> None:
    """A housekeeping round is a row of steps; the first one that met a wrong-typed key
    (here drain:seq:time, only used to age fresh mail) raised and every later step was
    skipped, round after round: parked mail of a paused domain never came back after
    resume, quarantine never expired, no batch job was topped up. Each step now fails alone,
    logged with what is wrong."""
    from drain.flow import ratelimit
    from drain.worker.housekeeping import run_once

    ratelimit.pause_domain(rclient, "example.org")
    client.enqueue_many([synthetic(i, domain="example.org") for i in range(3)])
    work()
    assert client.store.books().delivered == 0 and relay.accepted == 0
    rclient.delete(keys.SEQ_TIME)
    rclient.set(keys.SEQ_TIME, "not a sorted set")
    ratelimit.resume_domain(rclient, "example.org")

    run_once(client.store, force=True)
    work()

    assert client.store.books().delivered == 3 and relay.accepted == 3
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("age fresh mail failed" in e and "WRONGTYPE" in e for e in errors), errors


@pytest.mark.parametrize("key", [keys.SHAPE, keys.LATENCY, keys.FINDINGS, keys.SEQ_TIME])
def test_a_wrong_typed_statistics_key_neither_loses_nor_repeats_mail(
        key: str, client: Client, rclient: redis.Redis, relay: Sink, work: Callable[..., bool]) -> None:
    """The backlog shape, the latency histogram, the findings count and the enqueue times
    only feed figures. Of the wrong type, they failed the enqueue transaction after it had
    stored the mail (a raw ResponseError: the producer sends it again) and the settle script
    after it had taken the first message off the in-flight hash (lost from the books) and
    before the others were recorded (reaped and delivered again, round after round)."""
    rclient.set(key, "not what drain writes here")
    good = [synthetic(i, domain="example.org") for i in range(3)]
    bad = b"From: a@example.com\nTo: b@example.org\nSubject: x\rDATA\n\nbody\n"  # body.bare-cr-lf

    ids = client.enqueue_many([*good, bad]).ids
    assert len(ids) == 4
    work()

    books = client.store.books()
    assert books.delivered == 3 and books.quarantined == 1 and books.in_flight == 0, books
    assert sorted(m.message_id for m in relay.messages) == sorted(f"<synthetic-{i}@sender.example.com>"
                                                                 for i in range(3))


@pytest.mark.parametrize("key", [keys.ring("fresh"), keys.INFLIGHT])
def test_a_wrong_typed_lane_or_in_flight_hash_stops_claims_without_losing_mail(
        key: str, client: Client, rclient: redis.Redis, relay: Sink, work: Callable[..., bool]) -> None:
    """The claim script popped ids off the fresh lane, then failed on the backlog lane or the
    in-flight hash of the wrong type: a Lua script keeps the writes it made before an error,
    so those ids were on no list at all. Now it refuses before its first write."""
    from drain.worker.dispatch import ensure_tokens

    client.enqueue_many([synthetic(i, domain="example.org") for i in range(3)])
    rclient.set(key, "not what drain writes here")

    work()
    assert relay.accepted == 0
    rclient.delete(key)  # the operator repairs it
    ensure_tokens(rclient, client.settings)
    work()

    books = client.store.books()
    assert books.delivered == 3 and relay.accepted == 3, books


def test_a_wrong_typed_deferred_set_stops_settling_without_losing_mail(
        client: Client, rclient: redis.Redis, relay: Sink, work: Callable[..., bool]) -> None:
    """The settle script took each message off the in-flight hash, then failed to add it to
    a deferred set of the wrong type: the message was on no list. Now it refuses before its
    first write; the messages stay in flight and come back when the worker's lease lapses."""
    from tests.conftest import wait_for

    relay.set_policy(data_policy=lambda _i, _m: "451 4.3.0 try later")
    client.enqueue_many([synthetic(i, domain="example.org") for i in range(3)])
    rclient.set(keys.DEFERRED, "not what drain writes here")

    work()
    assert client.store.books().in_flight == 3
    rclient.delete(keys.DEFERRED)  # the operator repairs it
    relay.set_policy()
    wait_for(lambda: sum(client.store.reap_dead()) > 0, what="the lapsed claims to come back")
    from drain.worker.dispatch import ensure_tokens
    ensure_tokens(rclient, client.settings)
    work()

    books = client.store.books()
    assert books.delivered == 3 and books.in_flight == 0, books


def test_a_claim_whose_flow_figures_cannot_be_read_goes_back_to_ready(
        client: Client, rclient: redis.Redis, settings: Settings) -> None:
    """After a claim a batch reads the breakers and the relays' caps. When that read failed
    (here: the breakers' hash of the wrong type; after a failover, a connection still open
    to the old master) the claimed mail stayed in flight under a worker that lives on: its
    lease is renewed, so nothing gave it back until that worker stopped. It goes back now."""
    client.enqueue_many([synthetic(i, domain="example.org") for i in range(3)])
    rclient.set(keys.BREAKER_OPEN, "not what drain writes here")

    sender = Relay(RelayConfig.from_url(settings.relay), timeout_s=5.0)
    try:
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            Batch(client.store, sender, "live-worker", validate.Limits()).run()
    finally:
        sender.close()
    books = client.store.books()
    assert (books.in_flight, books.ready) == (0, 3), books
