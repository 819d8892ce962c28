"""Redis work per message on the drain side (issue 16, item 1): the in-flight hash kept as a
hash table at its usual size, no script call to promote when nothing is due, and the settle
of a journal that frees a capped tenant's slots only where it has some. Real redis-server."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.ops import tenants
from drain.store import embedded, events, keys
from drain.store.store import Outcome, Store
from drain.worker.journalpool import JournalPool
from drain.worker.window import Window

REPLY = "250 2.0.0 Ok: queued as R1"


def _delivered(msg_id: str) -> Outcome:
    return Outcome(msg_id, "delivered", envelope=REPLY, event=events.delivered_data(REPLY, 1, 0.5))


def _scripts_run(rclient: redis.Redis) -> int:
    stats = rclient.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


def test_the_in_flight_hash_is_a_hash_table_past_128_ids(client: Client, store: Store,
                                                        rclient: redis.Redis, tmp_path: Path) -> None:
    """A compact hash finds a field by scanning all of it: the in-flight hash, written and read
    by id at every claim and settle, must be a hash table once it holds a few claims.
    Mutant caught: spawn_on_port (and the embedded server's config) without
    hash-max-ziplist-entries 128 (Redis's default 512 keeps it compact: 'ziplist')."""
    ids = client.enqueue_many([synthetic(i) for i in range(200)]).ids
    assert len(store.claim("w1", 100).ids) == 100
    assert len(store.claim("w2", 100).ids) == 100
    assert rclient.object("encoding", keys.INFLIGHT) == b"hashtable"
    assert rclient.config_get("hash-max-ziplist-entries") == {"hash-max-ziplist-entries": "128"}
    assert "hash-max-ziplist-entries 128" in embedded._config(tmp_path).splitlines()
    # A message's own hash keeps the compact encoding (its few fields, up to 8 KB each).
    assert rclient.object("encoding", keys.message(ids[0])) == b"ziplist"
    for owner, mine in (("w1", ids[:100]), ("w2", ids[100:])):
        assert store.settle(owner, [_delivered(i) for i in mine]) == (100, 0)


def test_promote_runs_no_script_when_nothing_is_due(client: Client, store: Store, rclient: redis.Redis) -> None:
    """Mutants caught: promote_due without its first read (a script call each time: 1 != 0);
    the read taking a message due at `now` for one not yet due (`due >= now`: nothing moved)."""
    ids = client.enqueue_many([synthetic(i) for i in range(2)]).ids
    assert store.claim("w1", 2).ids == ids
    due = round(time.time() + 3600, 3)
    assert store.settle("w1", [Outcome(i, "deferred", score=due, info="451 later") for i in ids]) == (2, 0)

    before = _scripts_run(rclient)
    assert store.promote_due(now=due - 1) == 0
    assert _scripts_run(rclient) - before == 0
    rclient.zrem(keys.DEFERRED, ids[1])
    rclient.zadd(keys.DEFERRED, {ids[1]: due + 60})
    assert store.promote_due(now=due) == 1  # due exactly now: it goes
    assert store.books().ready == 1


def test_a_journal_settle_frees_a_capped_tenants_slots_and_leaves_others_alone(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """deliver.lua looks a tenant's busy set up once per call and frees the slots of the
    messages it settles there, journalled or not. Mutant caught: the lookup never finding the
    set (`freed` always false: the slots stay taken, 2 != 0)."""
    capped = client.enqueue_many([synthetic(i) for i in range(2)], tenant="capped.example").ids
    free = client.enqueue_many([synthetic(i + 2) for i in range(2)], tenant="free.example").ids
    tenants.set_concurrency(store, "capped.example", 5)
    claim = store.claim("w1", 4)
    assert sorted(claim.ids) == sorted(capped + free) and claim.capped
    assert rclient.zcard("drain:tenant:busy:capped.example") == 2
    assert not rclient.exists("drain:tenant:busy:free.example")

    store.journal("w1", [_delivered(i) for i in claim.ids[:3]], first=True)
    assert store.settle("w1", [_delivered(claim.ids[3])]) == (4, 0)
    assert rclient.zcard("drain:tenant:busy:capped.example") == 0
    assert not rclient.exists("drain:tenant:busy:free.example")
    books = store.books()
    assert (books.delivered, books.in_flight) == (4, 0) and books.balanced, books


def test_a_journal_settle_counts_each_delivery_in_its_latency_bucket(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """The latency bucket and backlog-shape minute are worked out once per acceptance time
    (deliver.lua's accepted_at): messages of the same time share one, others get their own.
    Mutants caught: the bucket of the next limit up (buckets_named[i + 1]); a latency sum
    off by a second a message."""
    ids = client.enqueue_many([synthetic(i) for i in range(4)]).ids
    now = time.time()
    ages = [3.0, 3.0, 100.0, 20_000.0]  # two messages share an acceptance time
    accepted = [f"{now - age:.3f}" for age in ages]
    for msg_id, t in zip(ids, accepted, strict=True):
        rclient.hset(keys.message(msg_id), "t", t)
    assert store.claim("w1", 4).ids == ids
    store.load(ids)  # the figures the journal entries carry
    store.journal("w1", [_delivered(i) for i in ids], first=True)
    assert store.commit("w1") == (4, 0)

    latency = {k.decode(): float(v) for k, v in rclient.hgetall(keys.LATENCY).items()}
    settled = time.time()
    assert {k: v for k, v in latency.items() if k != "sum"} == {"5": 2, "300": 1, "86400": 1}, latency
    assert sum(ages) - 1 < latency["sum"] <= sum(ages) + len(ages) * (settled - now) + 0.01, latency


def _rpush_calls(rclient: redis.Redis) -> int:
    return int(rclient.info("commandstats").get("cmdstat_rpush", {}).get("calls", 0))


def test_the_lanes_of_a_process_share_its_journal(client: Client, store: Store, rclient: redis.Redis) -> None:
    """A lane's deliveries go to its process's journal, and any settle of the process (its
    own or another lane's) or the reaper settles them as delivered. Mutant caught:
    commit_journal's held check without `family` (the other lane's entries count as no
    longer held: settled 0, they go back to ready and are sent again)."""
    ids = client.enqueue_many([synthetic(i) for i in range(6)]).ids
    assert store.claim("p", 2).ids == ids[:2]
    assert store.claim("p/1", 2).ids == ids[2:4]
    assert store.claim("q/1", 2).ids == ids[4:]  # another process: not of the family
    assert keys.journal("p/1") == keys.journal("p") != keys.journal("q/1")
    store.journal("p/1", [_delivered(i) for i in ids[2:4]], first=True)
    assert store.commit("p") == (2, 0)
    books = store.books()
    assert (books.delivered, books.in_flight) == (2, 4), books
    assert not rclient.exists(keys.journal("p"))

    # The reaper: a dead process's lanes' journalled mail is delivered, the rest given back.
    store.journal("p/1", [_delivered(ids[0])], first=True)  # held by "p", journalled by lane 1
    rclient.delete(keys.lease("p"))
    assert store.reap_dead() == (1, 0)
    books = store.books()
    assert (books.delivered, books.in_flight, books.ready) == (3, 2, 1), books
    assert store.settle("q/1", [_delivered(i) for i in ids[4:]]) == (2, 0)


def test_the_pool_journals_every_lanes_deliveries_in_one_write(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """drain.worker.journalpool: deliveries handed in by two lanes keep their window places
    until some lane writes them all, in one RPUSH; their places then come back. Mutants
    caught: journal.write_many with one RPUSH per owner (2 != 1); flush giving no place back
    (0 free); withdraw keeping the journal's count (the lane's settle skips the commit)."""
    ids = client.enqueue_many([synthetic(i) for i in range(3)]).ids
    assert store.claim("p", 2).ids == ids[:2]
    assert store.claim("p/1", 1).ids == ids[2:]
    window = Window(3)
    pool = JournalPool(store, window.give)
    assert all(window.take() for _ in range(3)) and not window.take()
    pool.deposit("p", _delivered(ids[0]), 1)
    pool.deposit("p/1", _delivered(ids[2]), 1)
    assert pool.owed() == 2 and not window.take()

    before = _rpush_calls(rclient)
    assert pool.flush() == 2
    assert _rpush_calls(rclient) - before == 1
    assert rclient.llen(keys.journal("p")) == 1  # one list element: the write's bundle (journal.bundle)
    assert window.free == 2 and pool.owed() == 2

    pool.deposit("p", _delivered(ids[1]), 1)
    mine, places, journalled = pool.withdraw("p")
    assert (len(mine), places, journalled) == (1, 1, 2) and pool.owed() == 0
    assert store.settle("p", mine) == (3, 0)  # its own delivery and the journal's two
    books = store.books()
    assert (books.delivered, books.in_flight) == (3, 0), books
