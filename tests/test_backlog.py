"""Backlog shape (qshape-like) from counters kept by every state move, against known ages."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.intake.api import Client, Submission
from drain.observe.backlog import BUCKETS_S, history, sample_history, shape
from drain.ops.quarantine import Quarantine
from drain.settings import Settings


def _queue(client: Client, domain: str, count: int) -> list[str]:
    return client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@{domain}",)) for i in range(count)]).ids


def test_shape_by_domain_and_age(client: Client) -> None:
    ratelimit.pause(client.redis)
    _queue(client, "a.example.com", 3)
    _queue(client, "b.example.org", 2)
    now = time.time()
    fresh = shape(client.store, now=now, pace=10.0)
    assert fresh.total == 5
    assert [(d.domain, d.total, d.by_age[0]) for d in fresh.domains] == [("a.example.com", 3, 3),
                                                                      ("b.example.org", 2, 2)]
    later = shape(client.store, now=now + 700, pace=10.0)
    assert later.domains[0].by_age[BUCKETS_S.index(600)] == 3
    day = shape(client.store, now=now + 2 * 86400, pace=10.0)
    assert day.domains[0].by_age[-1] == 3
    # While delivery is paused, no domain has a figure: each says what holds it.
    assert [(d.eta_s, d.held_by) for d in fresh.domains] == [(None, "delivery paused")] * 2
    assert (fresh.eta_s, fresh.held_by) == (None, {"*": "delivery paused"})
    ratelimit.resume(client.redis)  # no worker runs: nothing moves meanwhile
    fresh = shape(client.store, now=now, pace=10.0)
    # ETA: the pace shared by backlog part; a domain's own cap holds it back further.
    assert fresh.domains[0].eta_s == 3 / (10.0 * 3 / 5)
    ratelimit.set_domain(client.redis, "b.example.org", 0.5)
    assert shape(client.store, now=now, pace=10.0).domains[1].eta_s == 2 / 0.5


def test_shape_follows_every_state_move(client: Client, relay: Sink, settings: Settings,
                                        work: Callable[..., bool]) -> None:
    relay.set_policy(rcpt_policy=lambda r: "451 4.3.0 later" if r.startswith("later") else None)
    client.enqueue_many([Submission(synthetic(i), recipients=(f"now{i}@x.example.com",)) for i in range(4)])
    client.enqueue(synthetic(9), recipients=["later@y.example.com"])
    client.enqueue(b"From: broken\r\n\r\nno recipient\r\n")
    assert shape(client.store).total == 6
    work()
    current = shape(client.store)
    assert current.total == 1 and current.domains[0].domain == "y.example.com"  # deferred stays queued
    (quarantined,) = [r.id for r in Quarantine(client.store).records()]
    Quarantine(client.store).release([quarantined], "tester", force=True)
    assert shape(client.store).total == 2


def test_backlog_command_json(client: Client, settings: Settings) -> None:
    from tests.test_cli import drain

    ratelimit.pause(client.redis)
    _queue(client, "a.example.com", 2)
    result = drain(settings, "backlog", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["buckets_s"] == BUCKETS_S
    (entry,) = doc["domains"]
    assert set(entry) == {"domain", "total", "by_age", "eta_s", "held_by"}
    assert (entry["eta_s"], entry["held_by"]) == (None, "delivery paused")
    assert entry["domain"] == "a.example.com" and entry["total"] == 2 and len(entry["by_age"]) == len(BUCKETS_S)
    plain = drain(settings, "backlog")
    assert plain.returncode == 0 and b"a.example.com" in plain.stdout


def test_history_samples(client: Client) -> None:
    _queue(client, "a.example.com", 2)
    now = time.time()
    assert sample_history(client.store, now=now)
    assert not sample_history(client.store, now=now + 1)  # too soon after the last
    assert sample_history(client.store, now=now + 20)
    samples = history(client.store, now=now + 20)
    assert [s["queued"] for s in samples] == [2, 2] and samples[0]["t"] < samples[1]["t"]
