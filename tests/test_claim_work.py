"""What a claim costs Redis: its ids go into the in-flight hash as a hash table, never one by
one into a compact hash (listpack), which scans all of itself for each field written."""

from __future__ import annotations

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import events, keys
from drain.store.claimed import Outcome
from drain.store.store import Store
from drain.worker import dispatch, preamble
from drain.worker.dispatch import Span

REPLY = "250 2.0.0 Ok: queued"


def _delivered(msg_id: str) -> Outcome:
    return Outcome(msg_id, "delivered", envelope=REPLY, event=events.delivered_data(REPLY, 1, 0.5))


def test_a_claim_into_an_empty_in_flight_hash_writes_a_hash_table(client: Client, store: Store,
                                                                  rclient: redis.Redis) -> None:
    """A claim of 40 into no in-flight hash (fewer than hash-max-listpack-entries): a hash
    table, with only the claimed ids in it, and they settle as ever. Mutant caught: claim.lua
    without the placeholder ('ziplist'/'listpack')."""
    ids = client.enqueue_many([synthetic(i) for i in range(40)]).ids
    assert not rclient.exists(keys.INFLIGHT)
    claimed = store.claim("w1", 40).ids
    assert sorted(claimed) == sorted(ids)
    assert rclient.object("encoding", keys.INFLIGHT) == b"hashtable"
    held = rclient.hgetall(keys.INFLIGHT)
    assert set(held) == {i.encode() for i in ids} and set(held.values()) == {b"w1"}
    assert store.settle("w1", [_delivered(i) for i in claimed]) == (40, 0)
    assert not rclient.exists(keys.INFLIGHT)


def test_a_small_claim_leaves_a_small_in_flight_hash_compact(client: Client, store: Store,
                                                             rclient: redis.Redis) -> None:
    """A claim of a few ids is cheap either way: no placeholder is written for it."""
    ids = client.enqueue_many([synthetic(i) for i in range(3)]).ids
    assert len(store.claim("w1", 3).ids) == 3
    assert rclient.object("encoding", keys.INFLIGHT) in (b"ziplist", b"listpack")
    assert store.settle("w1", [_delivered(i) for i in ids]) == (3, 0)


def test_a_jobs_first_claim_starts_from_the_suspects_its_process_last_read(
        store: Store, rclient: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new job's lanes (a new Span each) go by what the process's last claim read of the
    suspects, not an LLEN of their own, while that is younger than JOB_SPAN_S. Mutants caught:
    no seeding (None: asked again); the reading's age not checked (an old one trusted)."""
    client = store.client
    assert Span(client, settings).seen_suspects() is None  # nothing read yet: the turn asks
    preamble.read(client, [Span(client, settings)])
    assert Span(client, settings).seen_suspects() is False
    rclient.rpush(keys.SUSPECT, "waiting")
    try:
        preamble.read(client, [Span(client, settings)])
    finally:
        rclient.delete(keys.SUSPECT)  # (no such message)
    assert Span(client, settings).seen_suspects() is True
    monkeypatch.setattr(dispatch, "JOB_SPAN_S", 0.0)
    assert Span(client, settings).seen_suspects() is None
