"""What a batch reads once per claim goes to Redis in one round trip after the claim
(drain.worker.preamble): each round trip costs Redis far more than these small reads. The
reads stay as fresh as before (a route changed between claims is used by the next claim:
tests/test_routes.py), and suspects seen with them are worked alone in the same job."""

from __future__ import annotations

from typing import Any

import pytest
import redis

import workers.jobs
from drain import validate
from drain.demo.seeding import synthetic
from drain.demo.sink import Received, Sink
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from drain.worker import dispatch
from drain.worker.batch import Batch
from drain.worker.delivery import Relay, RelayConfig
from drain.worker.relays import Relays
from drain.worker.rqworker import DrainWorker


def socket_reads(client: redis.Redis) -> int:
    """redis-server's socket reads so far: one per request (a command or a whole pipeline)."""
    return int(client.info("stats")["total_reads_processed"])


def test_a_claims_reads_take_one_round_trip_after_the_claim(
        client: Client, relay: Sink, rclient: redis.Redis, settings: Settings) -> None:
    """From the batch's start to the first message at the relay: the claim and one round
    trip for the breakers, the limited domains, the routes and relays and the messages. The
    sink's own INFO adds one read. Mutant caught: the gate's, the relays' and the messages' reads
    sent one by one again (five round trips after the claim)."""
    sender = Relay(RelayConfig.from_url(settings.relay), timeout_s=5.0)
    relays = Relays(rclient, settings, sender)  # a worker's, kept across its claims
    observer = redis.Redis(port=rclient.connection_pool.connection_kwargs["port"])
    seen: list[int] = []

    def at_first_data(index: int, _msg: Received) -> None:
        if index == 1:  # the first message of the second batch
            seen.append(socket_reads(observer))

    relay.set_policy(data_policy=at_first_data)
    try:
        client.enqueue_many([synthetic(0)])  # a first claim: the scripts loaded, the routes read
        assert Batch(client.store, relays, "one-trip", validate.Limits()).run() == 1
        client.enqueue_many([synthetic(i) for i in range(1, 6)])
        before = socket_reads(observer)
        assert Batch(client.store, relays, "one-trip", validate.Limits()).run() == 5
    finally:
        relays.close()
        observer.close()
    # before's INFO itself was read before it was counted; the claim; the claim's reads;
    # the INFO at the first DATA.
    assert seen and seen[0] - before == 3, seen[0] - before
    assert relay.accepted == 6


def test_a_suspect_seen_with_a_claims_reads_is_claimed_alone_in_the_same_job(
        client: Client, relay: Sink, rclient: redis.Redis, settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead worker's message becomes a suspect while a two-lane job works a backlog. The
    lanes see it with a later claim's reads (no LLEN of their own before each claim), the
    same job claims it by itself, and nothing else of the process is in flight while the
    relay has it. Mutant caught: the suspects read with the claim taken as none (it waits
    for the next job's first claim)."""
    monkeypatch.setattr(dispatch, "JOB_SPAN_S", 600.0)
    s = settings.with_(batch_size=4, relay_sessions=2, settle_every=2, max_tokens=1)
    ids = Client(rclient, s).enqueue_many([synthetic(i) for i in range(60)]).ids
    job = [0]
    made: list[tuple[str, int]] = []  # (the suspect's Message-ID, the job it was made in)
    worked: list[tuple[set[str], int]] = []  # (in flight while the relay had it, the job)

    def policy(index: int, msg: Received) -> None:
        if index == 3:  # mid-job: a ghost worker takes one message and dies
            taken = client.store.claim("ghost", 1).ids
            rclient.delete(keys.lease("ghost"))
            assert client.store.reap_dead() == (1, 0)
            made.append((f"<synthetic-{ids.index(taken[0])}@sender.example.com>", job[0]))
        elif made and msg.message_id == made[0][0]:
            worked.append(({k.decode() for k in rclient.hkeys(keys.INFLIGHT)}, job[0]))

    relay.set_policy(data_policy=policy)
    deliver = workers.jobs.deliver

    def counted(rt: Any) -> int:
        job[0] += 1
        return deliver(rt)

    monkeypatch.setattr(workers.jobs, "deliver", counted)
    DrainWorker([keys.RQ_QUEUE], connection=rclient, drain_settings=s, housekeeping=False).work(
        burst=True, logging_level="WARNING")
    assert len(made) == 1 and len(worked) == 1, (made, worked)
    inflight, in_job = worked[0]
    assert len(inflight) == 1 and in_job == made[0][1] == 1, (worked, made)
    books = client.store.books()
    assert books.delivered == 60 and books.queued == 0
