"""A batch job claims another batch while more mail is ready than the queued jobs will claim
(drain.worker.dispatch.Span): RQ's cost per job is spread over more messages on a big
backlog, and a job never takes mail that queued jobs would have claimed."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
import redis

import workers.jobs
from drain.demo.seeding import synthetic
from drain.demo.sink import Received, Sink, Stall
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from drain.worker import dispatch
from drain.worker.rqworker import DrainWorker


def drain_all(rclient: redis.Redis, settings: Settings, count: int, monkeypatch: pytest.MonkeyPatch,
              jobs: int = 0) -> list[int]:
    """Enqueue `count` messages under `settings` (and `jobs` batch jobs more than it queues),
    work them in burst mode; how many each job claimed."""
    Client(rclient, settings).enqueue_many([synthetic(i) for i in range(count)])
    if jobs:
        dispatch.queue_jobs(rclient, settings, jobs)
    handled: list[int] = []
    deliver = workers.jobs.deliver

    def counted(rt: Any) -> int:
        n = deliver(rt)
        handled.append(n)
        return n

    monkeypatch.setattr(workers.jobs, "deliver", counted)
    DrainWorker([keys.RQ_QUEUE], connection=rclient, drain_settings=settings, housekeeping=False).work(
        burst=True, logging_level="WARNING")
    assert int(rclient.hget(keys.BOOKS, "delivered") or 0) == count
    return handled


def test_a_job_claims_more_batches_while_the_backlog_outgrows_the_queued_jobs(
        rclient: redis.Redis, settings: Settings, relay: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutants caught: Span.more always False (every job stops at one batch: [10, 10, ...]);
    no JOB_ROUNDS cap (the first job takes all 60)."""
    monkeypatch.setattr(dispatch, "JOB_ROUNDS", 3)
    monkeypatch.setattr(dispatch, "JOB_SPAN_S", 600.0)  # rounds, not time, end these jobs
    s = settings.with_(batch_size=10, max_tokens=1, relay_sessions=1)
    handled = drain_all(rclient, s, 60, monkeypatch)
    assert [n for n in handled if n] == [30, 30]
    assert len(relay.messages) == 60


def test_a_job_leaves_the_mail_that_queued_jobs_will_claim(
        rclient: redis.Redis, settings: Settings, relay: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a job queued for every batch ready (here queued by hand: drain queues fewer, see
    the next test), each job works one batch. Mutant caught: backlog_beyond_tokens always
    True (the first job takes everything)."""
    monkeypatch.setattr(dispatch, "JOB_SPAN_S", 600.0)
    s = settings.with_(batch_size=10, max_tokens=64, relay_sessions=1)
    handled = drain_all(rclient, s, 60, monkeypatch, jobs=5)
    assert [n for n in handled if n] == [10] * 6


def queued_jobs(rclient: redis.Redis) -> int:
    return int(rclient.llen(f"rq:queue:{keys.RQ_QUEUE}"))


def test_jobs_are_queued_for_the_worker_processes_not_for_every_batch(
        rclient: redis.Redis, settings: Settings) -> None:
    """A job costs RQ about twenty round trips, so drain queues one per worker process, and
    more only for a backlog beyond what those claim in JOB_ROUNDS batches per lane (never
    more than one per batch). Mutants caught: one job per batch ready (the former rule: 64,
    DRAIN_MAX_TOKENS); the lanes left out of a job's share (10); the workers left out (5)."""
    s = settings.with_(batch_size=10, max_tokens=64, relay_sessions=2)
    Client(rclient, s).enqueue_many([synthetic(i) for i in range(1000)])
    assert queued_jobs(rclient) == 5  # 1000 ready / (10 a batch x 2 lanes x 10 rounds)
    for n in range(8):  # eight worker processes registered for drain's queue
        rclient.sadd(dispatch.WORKERS, f"rq:worker:test-{n}")
    dispatch.ensure_tokens(rclient, s)
    assert queued_jobs(rclient) == 8
    rclient.delete(dispatch.WORKERS)
    assert dispatch.tokens_for(1030, 8, s.with_(batch_size=1000)) == 2  # one per batch at most


def test_the_lanes_of_a_job_share_its_rounds(
        rclient: redis.Redis, settings: Settings, relay: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job's extra batches ((JOB_ROUNDS - 1) x lanes) are shared by its lanes: while one lane
    is stuck on a slow send, the other claims every one of them, and the job ends with the
    slow lane's message (no lane works its own last rounds alone while the other waits).
    Mutant caught: rounds counted per lane (the quick lane stops at JOB_ROUNDS batches, 15
    messages, and the 20th comes only after the slow send, from the slow lane)."""
    monkeypatch.setattr(dispatch, "JOB_ROUNDS", 3)
    monkeypatch.setattr(dispatch, "JOB_SPAN_S", 600.0)
    s = settings.with_(batch_size=5, max_tokens=1, relay_sessions=2)
    released = threading.Event()
    slow: list[str] = []
    stuck_at_20: list[bool] = []

    def policy(index: int, msg: Received) -> Stall | None:
        if index == 0:
            slow.append(msg.message_id)
            return Stall(seconds=2.0, release=released)
        if index == 20:  # the quick lane's fourth batch: its extra ones are the job's
            stuck_at_20.append(slow[0] not in {m.message_id for m in relay.messages})
            released.set()
        return None

    relay.set_policy(data_policy=policy)
    handled = drain_all(rclient, s, 60, monkeypatch)
    assert stuck_at_20 == [True], "the quick lane stopped before the slow send was let go"
    assert handled[0] == 30  # 2 lanes x 3 rounds x 5, as with rounds of their own


def test_a_job_claims_no_more_batches_past_its_span(
        rclient: redis.Redis, settings: Settings, relay: Sink) -> None:
    """Past JOB_SPAN_S the job ends at its batch, however big the backlog (the next job reads
    rules and lanes again). Mutant caught: the clock not consulted."""
    s = settings.with_(batch_size=10, max_tokens=1)
    Client(rclient, s).enqueue_many([synthetic(i) for i in range(40)])
    now = [0.0]

    def clock() -> float:
        return now[0]

    span = dispatch.Span(rclient, s, clock=clock)
    assert span.more()  # 40 ready, one job queued for 10
    now[0] = dispatch.JOB_SPAN_S
    assert not span.more()


def test_the_worker_heartbeat_extends_its_keys_in_one_round_trip(rclient: redis.Redis, settings: Settings) -> None:
    """DrainWorker sends RQ's heartbeat as one pipeline: the worker's key still gets its new
    time to live and last heartbeat. Mutant caught: the pipeline built but never executed."""
    worker = DrainWorker([keys.RQ_QUEUE], connection=rclient, drain_settings=settings, housekeeping=False)
    worker.register_birth()
    rclient.hdel(worker.key, "last_heartbeat")
    worker.heartbeat(1234)
    assert 1200 < rclient.ttl(worker.key) <= 1234
    assert rclient.hget(worker.key, "last_heartbeat")
    worker.register_death()


def test_a_job_ends_at_its_batch_when_redis_is_unavailable(settings: Settings) -> None:
    """Redis gone while a job asks whether to go on: the job ends at its batch, as before
    (the outcomes are settled already), rather than failing. Mutant caught: the
    ConnectionError let through."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    gone = redis.Redis(port=port, socket_connect_timeout=1)
    assert not dispatch.Span(gone, settings).more()
