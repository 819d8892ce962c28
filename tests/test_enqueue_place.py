"""Where an enqueue call's events go (lua/enqueue.lua): the producer proposes the place, its
clock's ms, and writes it into every lookup record of the call; Redis takes it when it is
within a second of its own clock (its records then go into the index as they came), else
puts the events at its own ms and writes that place over each record's."""

from __future__ import annotations

import time

import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.message import envelope_from_headers
from drain.store import keys
from drain.store.enqueue import Enqueue
from drain.trace import history


def _enqueue_at(client: Client, clock_s: float, count: int) -> list[str]:
    """`count` messages enqueued by a producer whose clock reads `clock_s`."""
    raws = [synthetic(i) for i in range(count)]
    items = [(raw, envelope_from_headers(raw), None) for raw in raws]
    return Enqueue(client.redis, client.settings, client.store.scripts, lambda: clock_s).many(
        items, "fresh", None, "api", [], None)


def _events_ms(rclient: redis.Redis) -> set[int]:
    return {int(sid.decode().split("-")[0]) for sid, _fields in rclient.xrange(keys.EVENTS)}


def _found(client: Client, msg_id: str) -> list[str]:
    query = history.Query(id=msg_id)
    docs = history.trace(client.redis, query, time.time(), client.settings.trace_retention_s)
    return [event["event"] for doc in docs for event in doc["events"]]


def test_the_events_go_where_the_producer_proposed_and_are_found(client: Client, rclient: redis.Redis) -> None:
    """A clock 300 ms ahead of Redis's: the call's entries are at its ms, from sequence 8191
    on. Mutant caught: the proposal never taken (the place from Redis's TIME alone)."""
    clock_s = time.time() + 0.3
    ids = _enqueue_at(client, clock_s, 120)
    sids = [sid.decode() for sid, _fields in rclient.xrange(keys.EVENTS)]
    proposed = int(clock_s * 1000)
    assert sids == [f"{proposed}-8191", f"{proposed}-8192", f"{proposed}-8193"]
    for msg_id in (ids[0], ids[60], ids[-1]):
        assert _found(client, msg_id) == ["received"]


def test_a_proposal_a_minute_off_is_not_taken_and_every_record_names_the_events_place(
        client: Client, rclient: redis.Redis) -> None:
    """A producer whose clock is a minute behind: the entries go at Redis's ms, and each lookup
    record is rewritten to name it, so every message is still found by its id. Mutants
    caught: the records kept as proposed when the proposal is not taken (nothing found); any
    proposal taken (the entries a minute back)."""
    before_ms = int(rclient.time()[0]) * 1000
    ids = _enqueue_at(client, time.time() - 60, 120)
    after_ms = (int(rclient.time()[0]) + 1) * 1000
    assert all(before_ms <= ms <= after_ms for ms in _events_ms(rclient))
    for msg_id in ids:
        assert _found(client, msg_id) == ["received"], msg_id
