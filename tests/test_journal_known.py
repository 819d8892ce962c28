"""A settle of the journal the worker knows it wrote (lib.commit_known: no entry read back),
its fallbacks to reading each entry, and the journals of workers from before session 8
(entries of the first form, journals named per lane): mail in flight across an upgrade is
settled once, never sent again."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.ops import tenants
from drain.store import events, journal, keys, lookup
from drain.store.store import Outcome, Store

REPLY = "250 2.0.0 Ok: queued as K1"
OWNER = "p1/0"


def _delivered(msg_id: str) -> Outcome:
    return Outcome(msg_id, "delivered", envelope=REPLY, event=events.delivered_data(REPLY, 1, 0.5))


def _claimed(client: Client, store: Store, count: int) -> list[str]:
    ids = client.enqueue_many([synthetic(i) for i in range(count)]).ids
    assert store.claim(OWNER, count).ids == ids
    store.load(ids)  # as the worker does: the figures known
    return ids


def _journal(store: Store, ids: list[str]) -> None:
    for start in range(0, len(ids), 3):
        store.journal(OWNER, [_delivered(i) for i in ids[start:start + 3]], first=start == 0)


def _figures(rclient: redis.Redis) -> tuple[Any, ...]:
    latency = rclient.hgetall(keys.LATENCY)
    return (rclient.hgetall(keys.SHAPE), rclient.hgetall(keys.TENANT_SHAPE),
            sum(int(v) for k, v in latency.items() if k != b"sum"))


def _seen(rclient: redis.Redis, ids: list[str]) -> list[tuple[str, Any]]:
    """Each id's delivered events as the lookup index finds them (id, data)."""
    found = lookup.of_messages(rclient, ids, lookup.days(0, 4e9))
    return [(i, [(e["id"], e.get("reply"), e.get("attempt")) for e in found.get(i, []) if e["event"] == "delivered"])
            for i in ids]


def test_a_settle_the_worker_knows_records_what_reading_each_entry_records(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """The same deliveries settled twice over, once as the worker knows it journalled them
    and once with that knowledge gone (each entry read back): the same books, figures,
    events and index. Then proof that the first way reads no entry: with every entry
    overwritten by garbage, the worker's knowledge still settles them all. Mutants caught:
    lib.commit_known returning nil always (the last commit settles none: (0, 5)); its
    count_in of each group dropped (the shape left at 8); its event text not added (no
    delivered events)."""
    results = []
    for known in (True, False):
        ids = _claimed(client, store, 8)
        _journal(store, ids)
        if not known:
            store.written.clear()
            store.elements.clear()
        assert store.commit(OWNER) == (8, 0)
        books = store.books()
        assert (books.in_flight, books.balanced) == (0, True), books
        assert not rclient.exists(keys.journal(OWNER), *map(keys.message, ids))
        results.append((_figures(rclient), [found for _i, found in _seen(rclient, ids)]))
    (figures_known, seen_known), (figures_read, seen_read) = results
    assert figures_known == ({}, {}, 8) and figures_read == ({}, {}, 16)
    assert [[(i, r, a) for _id, r, a in found] for i, found in zip(range(8), seen_known, strict=True)] == \
        [[(i, r, a) for _id, r, a in found] for i, found in zip(range(8), seen_read, strict=True)] == \
        [[(i, REPLY, 1)] for i in range(8)]
    assert store.books().delivered == 16

    ids = _claimed(client, store, 5)
    _journal(store, ids)
    for k in range(2):  # (two writes: two list elements)
        rclient.lset(keys.journal(OWNER), k, b"\x10garbage")
    assert store.commit(OWNER) == (5, 0)
    assert _figures(rclient) == ({}, {}, 21) and store.books().delivered == 21


def test_an_entry_the_worker_does_not_know_has_the_journal_read(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """Another lane's entry written after this lane took its knowledge (here: one written
    past the Store): the journal holds more than the worker knows, so every entry is read
    and all are settled. Mutant caught: lib.commit_known without its LLEN check (3 settled,
    the 4th left in flight)."""
    ids = _claimed(client, store, 4)
    _journal(store, ids[:3])
    rclient.rpush(keys.journal(OWNER), journal.entry(_delivered(ids[3]), True))
    assert store.commit(OWNER) == (4, 0)
    books = store.books()
    assert (books.delivered, books.in_flight) == (4, 0) and books.balanced, books
    assert _figures(rclient)[:2] == ({}, {})


@pytest.mark.parametrize("count", [3, 20])
def test_a_known_entry_of_mail_given_away_has_the_journal_read(
        client: Client, store: Store, rclient: redis.Redis, count: int) -> None:
    """One of the messages went to another owner meanwhile (its lease lapsed): it is not
    settled by this owner, the others are, with their figures (20: the in-flight hash read
    whole, 3: by HMGET). Mutant caught: lib.commit_known without `if not yes then return
    nil end` (the other owner's message counted delivered and its hash dropped)."""
    ids = _claimed(client, store, count)
    _journal(store, ids)
    rclient.hset(keys.INFLIGHT, ids[1], "w2")
    assert store.commit(OWNER) == (count - 1, 1)
    assert rclient.hget(keys.INFLIGHT, ids[1]) == b"w2" and rclient.exists(keys.message(ids[1]))
    assert store.books().delivered == count - 1
    store.settle("w2", [_delivered(ids[1])])
    assert _figures(rclient) == ({}, {}, count)


def test_a_known_settle_frees_a_capped_tenants_slots(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """Messages of a tenant with a concurrency cap hold slots until settled: the settle
    reads the journal (the slots name the ids) and frees them. Mutant caught:
    lib.commit_known without its busy check (the slots stay taken)."""
    ids = client.enqueue_many([synthetic(i) for i in range(3)]).ids
    tenant = rclient.hget(keys.message(ids[0]), "tn")
    assert tenant
    tenants.set_concurrency(store, tenant.decode(), 10)
    assert store.claim(OWNER, 3).ids == ids
    busy = f"drain:tenant:busy:{tenant.decode()}"
    assert rclient.zcard(busy) == 3
    store.load(ids)
    _journal(store, ids)
    assert store.commit(OWNER) == (3, 0)
    assert rclient.zcard(busy) == 0
    assert _figures(rclient) == ({}, {}, 3)


def _first_form(rclient: redis.Redis, msg_id: str) -> bytes:
    """An entry as a worker of session 7 wrote it: a flags byte, then the index record, id,
    info, the message's dom, t and tn, and the event's data, each with its 4-byte length."""
    flags, values = 1, []
    for k, value in enumerate(rclient.hmget(keys.message(msg_id), "dom", "t", "tn")):
        if value is not None:
            flags |= 2 << k
        values.append(value or b"")
    fields = (events.delivered_record(msg_id), msg_id.encode(), b"", *values,
              events.delivered_data(REPLY, 1, 0.5).encode())
    return bytes([flags]) + b"".join(struct.pack(">I", len(f)) + f for f in fields)


def test_entries_of_the_first_form_are_settled_after_an_upgrade(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """A journal written by a worker of before (first form) and then by this one: every
    delivery in it is settled, with its figures and events; a damaged entry of either form
    costs its own message only. Mutant caught: lib.commit_journal without its first-form
    branch (the old entries' mail left in flight: (2, 2))."""
    ids = _claimed(client, store, 5)
    key = keys.journal(OWNER)
    rclient.rpush(key, _first_form(rclient, ids[0]), _first_form(rclient, ids[1]))
    rclient.rpush(key, journal.entry(_delivered(ids[2]), True, store.figures.pop(ids[2])),
                  journal.entry(_delivered(ids[3]), True, store.figures.pop(ids[3])))
    rclient.rpush(key, b"\x10\x00\x00\x00\x09short", b"\x03\x00\x00")
    assert store.commit(OWNER) == (4, 2)
    assert rclient.hkeys(keys.INFLIGHT) == [ids[4].encode()]
    assert _figures(rclient)[2] == 4
    assert [found for _i, found in _seen(rclient, ids[:4])] == [[(ids[k], REPLY, 1)] for k in range(4)]
    store.settle(OWNER, [_delivered(ids[4])])
    assert _figures(rclient)[:2] == ({}, {})


def test_the_reaper_settles_a_lane_journal_of_a_worker_from_before(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """A worker of session 7 journalled per lane ("drain:journal:<process>/<lane>") and died
    across the upgrade: the reaper settles that journal as delivered and gives back only the
    rest. Mutant caught: reap.lua without its lane journal (3 given back, 0 delivered: the
    journalled mail sent again)."""
    old = "p0-1234-abcd/1"
    ids = client.enqueue_many([synthetic(i) for i in range(3)]).ids
    assert store.claim(old, 3).ids == ids
    rclient.rpush(keys.lane_journal(old), _first_form(rclient, ids[0]), _first_form(rclient, ids[1]))
    rclient.delete(keys.lease(old))
    assert store.reap_dead() == (1, 0)
    books = store.books()
    assert (books.delivered, books.in_flight) == (2, 0) and books.balanced, books
    assert not rclient.exists(keys.lane_journal(old))
    assert [i.decode() for i in rclient.lrange(keys.SUSPECT, 0, -1)] == ids[2:]


def test_a_settle_of_other_outcomes_settles_the_known_journal_too(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """A claim that ends with outcomes other than deliveries goes through settle.lua: the
    journal the worker knows is settled there the same way (its entries overwritten by
    garbage here, to show none is read), the rest of the claim as asked. Mutant caught:
    settle.lua without lib.commit_known (the garbage read: (2, 4), the deliveries left in
    flight)."""
    ids = _claimed(client, store, 6)
    _journal(store, ids[:4])
    for k in range(2):  # (two writes: two list elements)
        rclient.lset(keys.journal(OWNER), k, b"\x10garbage")
    assert store.settle(OWNER, [Outcome(i, "requeue") for i in ids[4:]]) == (6, 0)
    books = store.books()
    assert (books.delivered, books.in_flight, books.ready) == (4, 0, 2) and books.balanced, books
    assert _figures(rclient)[2] == 4 and sum(int(v) for v in rclient.hvals(keys.SHAPE)) == 2
    assert [found for _i, found in _seen(rclient, ids[:4])] == [[(ids[k], REPLY, 1)] for k in range(4)]


def _deliver_calls(rclient: redis.Redis) -> int:
    found = rclient.info("commandstats").get("cmdstat_evalsha", {})
    return int(found.get("calls", 0)) if isinstance(found, dict) else 0


def test_a_claim_s_own_deliveries_settle_grouped_as_the_journal_s_do(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """Deliveries the worker settles itself at the end of a claim (never journalled) are
    passed grouped by their figures (known_args direct) and leave the same books, figures,
    events and index as the same deliveries passed one by one (their figures not known).
    Mutants caught: deliver.lua's HEAD not counting the two new fields (the call fails); the
    direct count ignored by commit_known's element check (nothing settled: (0, 6))."""
    results = []
    for grouped in (True, False):
        ids = _claimed(client, store, 6)
        if not grouped:
            store.figures.clear()  # (known_args then knows nothing: each message read in the script)
        before = _deliver_calls(rclient)
        assert store.settle(OWNER, [_delivered(i) for i in ids]) == (6, 0)
        assert _deliver_calls(rclient) - before == 1
        books = store.books()
        assert (books.in_flight, books.balanced) == (0, True), books
        assert not rclient.exists(*map(keys.message, ids))
        results.append((_figures(rclient), [found for _i, found in _seen(rclient, ids)]))
    (figures_grouped, seen_grouped), (figures_plain, seen_plain) = results
    assert figures_grouped == ({}, {}, 6) and figures_plain == ({}, {}, 12)
    assert [[(r, a) for _id, r, a in found] for found in seen_grouped] == \
        [[(r, a) for _id, r, a in found] for found in seen_plain] == [[(REPLY, 1)]] * 6


def test_grouped_deliveries_go_again_one_by_one_when_the_journal_is_not_as_known(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """A journal element the worker did not write (a dead process's copy, another lane's write
    past the Store): the grouped call moves nothing and answers -1, and the worker sends the
    deliveries again one by one, the journal read entry by entry. Mutant caught: _deliver
    taking -1 as the answer (the 4 deliveries left in flight, the journal's left too)."""
    ids = _claimed(client, store, 5)
    rclient.rpush(keys.journal(OWNER), journal.bundle([journal.entry(_delivered(ids[4]), True)]))
    before = _deliver_calls(rclient)
    assert store.settle(OWNER, [_delivered(i) for i in ids[:4]]) == (5, 0)
    assert _deliver_calls(rclient) - before == 2
    books = store.books()
    assert (books.delivered, books.in_flight) == (5, 0) and books.balanced, books
    assert _figures(rclient)[:2] == ({}, {}) and not rclient.exists(keys.journal(OWNER))


def test_a_bundle_cut_short_settles_the_entries_before_the_cut(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """A write's element damaged at its end: the whole entries before the damage count as
    delivered, the one cut is skipped (its mail goes back and is sent again, never lost)."""
    ids = _claimed(client, store, 3)
    whole = journal.bundle([journal.entry(_delivered(i), True) for i in ids])
    rclient.rpush(keys.journal(OWNER), whole[:-5])
    store.figures.clear()
    assert store.commit(OWNER) == (2, 1)
    books = store.books()
    assert (books.delivered, books.in_flight) == (2, 1) and books.balanced, books
