"""Tenants where they meet the other features: mail a dead worker held (the suspects) of a
tenant that is paused meanwhile waits like the rest of its mail."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.ops import tenants
from drain.store import keys


def _rcpts(relay: Sink) -> list[str]:
    return sorted(r for m in relay.messages for r in m.recipients)


@pytest.mark.parametrize("how", ["pause", "rate 0"])
def test_a_paused_tenants_mail_left_by_a_dead_worker_waits_for_the_resume(
        client: Client, relay: Sink, work: Callable[..., bool], how: str) -> None:
    acme = client.enqueue(synthetic(1), recipients=["a@x.example.org"], tenant="acme")
    assert client.store.claim("dead-worker", 1).ids == [acme]
    client.redis.delete(keys.lease("dead-worker"))
    if how == "pause":
        tenants.pause(client.store, "acme", "abuse report")
    else:
        tenants.set_rate(client.store, "acme", 0.0)
    client.enqueue(synthetic(2), recipients=["z@x.example.org"], tenant="zed")
    assert client.store.reap_dead() == (1, 0)  # acme's message is a suspect now

    work()
    assert _rcpts(relay) == ["z@x.example.org"], "a paused tenant's mail went out"
    books = client.store.books()
    assert (books.ready, books.delivered, books.in_flight) == (1, 1, 0) and books.balanced, books
    assert [r["ready_backlog"] for r in tenants.listing(client.store) if r["tenant"] == "acme"] == [1]

    if how == "pause":
        tenants.resume(client.store, "acme")
    else:
        tenants.set_rate(client.store, "acme", None)
    work()
    assert _rcpts(relay) == ["a@x.example.org", "z@x.example.org"]
    books = client.store.books()
    assert (books.ready, books.delivered, books.queued) == (0, 2, 0) and books.balanced, books
