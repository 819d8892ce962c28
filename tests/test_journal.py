"""The delivery journal (drain/store/journal.py): a journalled delivery counts as delivered.
Whoever settles the owner next (its own settle, the job's judge through settle.lua, or the
reaper once its lease lapses) settles the journal first, so a worker killed between the
journal write and the settle does not have its journalled mail sent again."""

from __future__ import annotations

from collections.abc import Callable

import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.ops import tenants
from drain.settings import Settings
from drain.store import events, keys
from drain.store.store import Outcome, Store
from tests.conftest import wait_for
from tests.test_crash import kill_mid_batch

REPLY = "250 2.0.0 Ok: queued as J1"


def _delivered(msg_id: str, info: str = "") -> Outcome:
    return Outcome(msg_id, "delivered", info=info, envelope=REPLY, event=events.delivered_data(REPLY, 1, 0.5))


def _delivered_events(rclient: redis.Redis) -> list[dict[str, object]]:
    return [d for d in events.decode_all(rclient.xrange(keys.EVENTS)) if d["event"] == "delivered"]


def test_the_reaper_settles_a_dead_workers_journal_as_delivered(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """Mutant caught: reap.lua without lib.commit_journal (the journalled messages go back to
    the suspect list and are sent again)."""
    ids = client.enqueue_many([synthetic(i) for i in range(6)]).ids
    assert store.claim("w-dead", 6).ids == ids
    store.journal("w-dead", [_delivered(i) for i in ids[:3]], first=True)
    rclient.delete(keys.lease("w-dead"))  # it died: its lease lapses

    assert store.reap_dead() == (3, 0)
    books = store.books()
    assert (books.delivered, books.in_flight, books.ready) == (3, 0, 3) and books.balanced, books
    assert sorted(d["id"] for d in _delivered_events(rclient)) == sorted(ids[:3])
    assert [i.decode() for i in rclient.lrange(keys.SUSPECT, 0, -1)] == ids[3:]
    assert not rclient.exists(keys.journal("w-dead"))
    assert not any(rclient.exists(keys.message(i)) for i in ids[:3])


def test_a_settle_of_the_owner_settles_its_journal_first(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """The job's judge gives back every message a stuck lane holds (settle.lua, requeue): the
    journalled ones were delivered and stay so. Mutant caught: settle.lua without
    lib.commit_journal (delivered 0, the journalled mail requeued)."""
    ids = client.enqueue_many([synthetic(i) for i in range(4)]).ids
    assert store.claim("w1", 4).ids == ids
    store.journal("w1", [_delivered(i) for i in ids[:2]], first=True)

    assert store.settle("w1", [Outcome(i, "requeue") for i in ids]) == (4, 2)
    books = store.books()
    assert (books.delivered, books.in_flight, books.ready) == (2, 0, 2) and books.balanced, books
    assert sorted(d["id"] for d in _delivered_events(rclient)) == sorted(ids[:2])
    assert not rclient.exists(keys.journal("w1"))


def test_journal_entries_of_mail_no_longer_held_are_dropped(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """An entry whose message went to another owner meanwhile (the lease lapsed) is not
    counted; a damaged entry is skipped; refused recipients reach the bounces stream.
    Mutants caught: lib.commit_journal without the lib.held check (the other owner's message
    counted delivered); lib.journalled calling struct.unpack without pcall (the call fails)."""
    ids = client.enqueue_many([synthetic(i) for i in range(3)]).ids
    assert store.claim("w1", 3).ids == ids
    refused = '{"x@example.net": "550 no"}'
    store.journal("w1", [_delivered(ids[0], info=refused), _delivered(ids[1])], first=True)
    rclient.rpush(keys.journal("w1"), b"\x01\x00\x00\x00\x05short")
    rclient.hset(keys.INFLIGHT, ids[1], "w2")  # given back and claimed by w2

    assert store.commit("w1") == (1, 2)
    assert rclient.hget(keys.INFLIGHT, ids[1]) == b"w2" and rclient.exists(keys.message(ids[1]))
    assert [d["id"] for d in _delivered_events(rclient)] == [ids[0]]
    assert [e[1][b"id"].decode() for e in rclient.xrange(keys.BOUNCES)] == [ids[0]]
    assert store.books().delivered == 1
    store.settle("w2", [_delivered(ids[1])])
    store.settle("w1", [_delivered(ids[2])])


def test_a_claim_of_a_capped_tenant_says_so(client: Client, store: Store) -> None:
    """Its slots free only when settled, so the worker does not journal it. Mutant caught:
    claim.lua without `capped = 2`."""
    ids = client.enqueue_many([synthetic(i) for i in range(2)]).ids
    first = store.claim("w1", 1)
    assert not first.capped
    tenancy_of = client.redis.hget(keys.message(ids[1]), "tn")
    assert tenancy_of
    tenants.set_concurrency(store, tenancy_of.decode(), 5)
    second = store.claim("w1", 1)
    assert second.ids == ids[1:] and second.capped and not second.isolated
    store.settle("w1", [_delivered(i) for i in ids])


def test_a_worker_killed_between_journal_and_settle_does_not_resend_journalled_mail(
        client: Client, relay: Sink, settings: Settings, work: Callable[..., bool],
        housekeep: Callable[[], object], rclient: redis.Redis) -> None:
    """A worker process journals every delivery (window 1) and is killed while the relay holds
    its 8th message: the 7 it journalled are counted delivered once its lease lapses, with no
    worker running, and only the 8th (the relay took it, the worker never heard) is sent
    twice. Mutant caught: reap.lua without lib.commit_journal (8 copies more)."""
    total = 30
    client.enqueue_many([synthetic(i) for i in range(total)])
    kill_mid_batch(client, relay, settings, DRAIN_SETTLE_EVERY="1", DRAIN_RELAY_SESSIONS="1",
                   DRAIN_LOCAL_JOURNAL="off")  # Redis's journal alone (tests/test_local_journal.py: with it)
    journalled = sum(rclient.llen(k) for k in rclient.scan_iter(keys.journal("*")))
    assert journalled == 7 and client.store.books().delivered == 0

    wait_for(lambda: (housekeep(), client.store.books().in_flight == 0)[1], what="the lease to lapse")
    assert client.store.books().delivered == 7  # settled by the reaper, no worker ran

    work()
    books = client.store.books()
    assert books.delivered == total and books.queued == 0
    assert {m.message_id for m in relay.messages} == {f"<synthetic-{i}@sender.example.com>" for i in range(total)}
    assert len(relay.messages) - total <= 1


def test_journalled_deliveries_leave_the_figures_as_a_settle_does(
        client: Client, store: Store, rclient: redis.Redis) -> None:
    """An entry carries the message's domain, time and tenant as the worker read them (one
    read fewer per message in the settle), or not (read in the settle): either way the backlog
    shape and the tenants' counts go down to nothing and the latency counts each message.
    Mutants caught: lib.journalled taking the figures in another order (the shape left at 7);
    journal.entry without the flag of a figure the message has (the shape left at 4)."""
    ids = client.enqueue_many([synthetic(i) for i in range(7)]).ids
    assert store.claim("w1", 7).ids == ids
    store.load(ids[:4])  # the figures of the first 4 known, of the rest not
    for start in (0, 3, 6):
        store.journal("w1", [_delivered(i) for i in ids[start:start + 3]], first=start == 0)
    assert store.commit("w1") == (7, 0)

    books = store.books()
    assert (books.delivered, books.in_flight, books.ready) == (7, 0, 0) and books.balanced, books
    assert rclient.hgetall(keys.SHAPE) == {} and rclient.hgetall(keys.TENANT_SHAPE) == {}
    latency = rclient.hgetall(keys.LATENCY)
    assert sum(int(v) for k, v in latency.items() if k != b"sum") == 7, latency
    assert store.figures == {}


def test_a_worker_journals_with_events_off(client: Client, settings: Settings, work: Callable[..., bool],
                                           rclient: redis.Redis) -> None:
    """With DRAIN_TRACE=off an entry has no index record; the worker's journal is settled all
    the same, and nothing is recorded. Mutant caught: lib.journalled refusing an entry with an
    empty index record (the deliveries left in flight, counted as skipped)."""
    off = Client(client.redis, settings.with_(trace=False))
    off.enqueue_many([synthetic(i) for i in range(12)])
    work(trace=False, settle_every=2)
    books = client.store.books()
    assert (books.delivered, books.in_flight) == (12, 0) and books.balanced, books
    assert rclient.xlen(keys.EVENTS) == 0 and not list(rclient.scan_iter(keys.journal("*")))
