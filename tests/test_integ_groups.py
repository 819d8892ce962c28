"""Where the merged features meet: a message with two destination-domain groups whose first
group is done while the second waits (parked on a paused domain, refused, held), and what its
history, the books and the relay show afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.ops import actions, control
from drain.ops.select import Selector
from drain.store import keys
from drain.trace import history, where
from tests.test_routes import _deliveries, _run_until_done

A, B = "alpha.example.com", "beta.example.net"


def _two(client: Client, count: int, tenant: str | None = None) -> list[str]:
    return [client.enqueue(synthetic(i), recipients=[f"user{i}@{A}", f"user{i}@{B}"], tenant=tenant)
            for i in range(count)]


def _trace(client: Client, msg_id: str) -> dict[str, Any]:
    docs = history.trace(client.redis, history.Query(id=msg_id), time.time(), client.settings.trace_retention_s)
    assert len(docs) == 1
    return docs[0]


def _names(doc: dict[str, Any]) -> list[str]:
    return [e["event"] for e in doc["events"]]


def test_a_group_delivered_before_the_rest_parks_is_in_the_history(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    control.pause(client.store, B)
    ids = _two(client, 2, tenant="acme")
    work()
    # Alpha took it: the history says so (with the relay's reply) before it parks for beta.
    for msg_id in ids:
        doc = _trace(client, msg_id)
        assert _names(doc) == ["received", "delivered", "parked"], doc
        assert doc["events"][1]["reply"].startswith("250"), doc
    # The operator bounces the first while it waits: its alpha delivery stays in its history.
    assert actions.run(client.store, "bounce", Selector(ids=(ids[0],)), reason="test").moved == 1
    doc = _trace(client, ids[0])
    assert _names(doc) == ["received", "delivered", "parked", "bounced"]
    # Alpha took it: it counts as delivered in the books, and its trace says so too.
    assert doc["state"] == "delivered" and client.store.books().delivered == 1
    control.resume(client.store, B)
    _run_until_done(client, work)
    # One delivered event per group, and each recipient got it once at the relay.
    assert _names(_trace(client, ids[1])) == ["received", "delivered", "parked", "delivered"]
    assert dict(_deliveries(relay)) == {
        ("<synthetic-0@sender.example.com>", f"user0@{A}"): 1,
        ("<synthetic-1@sender.example.com>", f"user1@{A}"): 1,
        ("<synthetic-1@sender.example.com>", f"user1@{B}"): 1}
    books = client.store.books()
    assert (books.accepted, books.delivered, books.bounced, books.queued) == (2, 2, 0, 0), books


def test_a_group_refused_before_the_rest_parks_is_in_the_history(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    relay.set_policy(rcpt_policy=lambda r: "550 5.1.1 no such user" if r.endswith(A) else None)
    control.pause(client.store, B)
    (msg_id,) = _two(client, 1)
    work()
    doc = _trace(client, msg_id)
    assert _names(doc) == ["received", "bounced", "parked"], doc
    assert "550 5.1.1" in doc["events"][1]["reply"] and f"user0@{A}" in doc["events"][1]["reply"]
    control.resume(client.store, B)
    _run_until_done(client, work)
    assert _names(_trace(client, msg_id)) == ["received", "bounced", "parked", "delivered"]
    assert dict(_deliveries(relay)) == {("<synthetic-0@sender.example.com>", f"user0@{B}"): 1}
    books = client.store.books()
    assert (books.accepted, books.delivered, books.bounced, books.queued) == (1, 1, 0, 0), books


def test_a_narrowing_repeated_after_a_lost_reply_records_no_second_event(client: Client) -> None:
    from drain.message import Envelope

    (msg_id,) = _two(client, 1)
    claim = client.store.claim("w1", 1)
    assert claim.ids == [msg_id]
    rest = Envelope("billing@sender.example.com", (f"user0@{B}",))
    for _ in range(2):
        assert client.store.narrow("w1", msg_id, rest, True, "250 ok")
    assert _names(_trace(client, msg_id)) == ["received", "delivered"]
    client.redis.delete(keys.lease("w1"))
    assert client.store.reap_dead() == (1, 0)  # back to ready: the books balance


def test_actions_on_tenants_mail_parked_for_its_second_group_reach_the_relay_exactly(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """Three tenants' two-domain mail, beta paused: alpha goes, beta parks. The operator holds,
    deletes and bounces some of what waits; then beta resumes and the held mail is released.
    Checked message by message at the relay: each recipient once, none acted on reaches beta."""
    control.pause(client.store, B)
    owner: dict[str, str] = {}
    for i in range(18):
        tenant = ("t-one", "t-two", "t-three")[i % 3]
        owner[client.enqueue(synthetic(i), recipients=[f"user{i}@{A}", f"user{i}@{B}"], tenant=tenant)] = tenant
    work()
    ids = list(owner)
    assert len(relay.messages) == 18 and client.store.books().ready == 18
    held, deleted, bounced = ids[0:3], ids[3:6], ids[6:9]
    for action, chosen in (("hold", held), ("delete", deleted), ("bounce", bounced)):
        assert actions.run(client.store, action, Selector(ids=tuple(chosen)), reason="t").moved == 3
        assert client.store.books().balanced
    # A selector by domain still finds what waits for beta (its envelope is narrowed to it):
    # the 9 parked and the 3 held.
    found = actions.run(client.store, "delete", Selector(domain=B), dry_run=True).ids
    assert sorted(found) == sorted(ids[9:] + held)
    control.resume(client.store, B)
    _run_until_done(client, work)
    assert actions.run(client.store, "release", Selector(ids=tuple(held))).moved == 3
    _run_until_done(client, work)

    seen = _deliveries(relay)
    assert set(seen.values()) == {1}, "a recipient got a message twice"
    for n, msg_id in enumerate(ids):
        mid = f"<synthetic-{n}@sender.example.com>"
        assert seen[(mid, f"user{n}@{A}")] == 1
        assert seen.get((mid, f"user{n}@{B}"), 0) == (0 if msg_id in deleted + bounced else 1), msg_id
    books = client.store.books()
    # Every message took alpha before the action: each counts as delivered but the deleted ones.
    assert (books.accepted, books.delivered, books.deleted, books.bounced, books.queued) == (18, 15, 3, 0, 0)
    assert client.redis.hgetall(keys.SHAPE) == {} and client.redis.hgetall(keys.TENANT_SHAPE) == {}


def test_show_counts_the_attempts_of_groups_done_before_the_rest(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    # Alpha takes it while beta waits, paused: one delivery attempt was made.
    control.pause(client.store, B)
    (parked,) = _two(client, 1)
    work()
    doc, _raw = where.show(client.redis, parked, client.settings.trace_retention_s)
    assert doc["state"] == "parked" and doc["attempts"] == 1, doc
    # Two groups done in one pass are two attempts.
    three = client.enqueue(synthetic(2), recipients=[f"user2@{A}", "user2@gamma.example.org", f"user2@{B}"])
    work()
    assert where.show(client.redis, three, client.settings.trace_retention_s)[0]["attempts"] == 2
    # Beta defers it in the same pass as alpha takes it: two attempts (one per group).
    control.resume(client.store, B)
    relay.set_policy(rcpt_policy=lambda r: "451 4.3.0 later" if r.endswith(B) and "user1@" in r else None)
    (deferred,) = [client.enqueue(synthetic(1), recipients=[f"user1@{A}", f"user1@{B}"])]
    work()
    doc, _raw = where.show(client.redis, deferred, client.settings.trace_retention_s)
    assert doc["state"] == "deferred" and doc["attempts"] == 2, doc
    # Once done, each group's delivered event has its own attempt number, as show counts them.
    relay.set_policy()
    client.redis.zadd(keys.DEFERRED, {deferred: 0})
    _run_until_done(client, work)
    for msg_id, attempts in ((parked, [1, 2]), (deferred, [1, 3]), (three, [2, 3])):
        events = _trace(client, msg_id)["events"]
        assert [e["attempt"] for e in events if e["event"] == "delivered"] == attempts, events
        assert where.show(client.redis, msg_id, client.settings.trace_retention_s)[0]["attempts"] == attempts[-1]
