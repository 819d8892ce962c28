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
from drain.trace import history
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
    assert _names(_trace(client, ids[0])) == ["received", "delivered", "parked", "bounced"]
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
