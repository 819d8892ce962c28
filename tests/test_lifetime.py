"""The lifetime limit in every waiting state (parked, held, deferred), and delay warnings."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.ops import actions, control
from drain.store import events, keys
from drain.worker import lifetime
from drain.worker.housekeeping import run_once

PARKED, HELD, DEFERRED = "parked.example.org", "held.example.org", "deferred.example.org"


def _waiting(client: Client, relay: Sink, work: Callable[..., bool]) -> dict[str, list[str]]:
    """Two messages parked (domain paused), two held (breaker open), two deferred (4xx)."""
    control.pause(client.store, PARKED)
    client.redis.hset(keys.BREAKER_OPEN, HELD, f"{time.time() + 3600:.3f}")
    relay.set_policy(rcpt_policy=lambda a: "451 4.3.0 later" if a.endswith(DEFERRED) else None)
    ids = {d: client.enqueue_many([synthetic(n + 10 * k, domain=d) for n in range(2)]).ids
           for k, d in enumerate((PARKED, HELD, DEFERRED))}
    work()
    books = client.store.books()
    assert (books.ready, books.deferred, books.delivered) == (2, 4, 0), books
    return ids


def _let_go(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    relay.set_policy()
    client.redis.delete(keys.BREAKER_OPEN)
    control.resume(client.store, PARKED)
    client.store.promote_due(now=time.time() + 10**6)
    control.top_up(client.store)
    work()


def test_parked_held_and_deferred_mail_expires_with_a_report(client: Client, relay: Sink,
                                                             work: Callable[..., bool]) -> None:
    store = client.store
    store.settings = store.settings.with_(dsn=True, max_lifetime_s=3600.0)
    _waiting(client, relay, work)
    assert lifetime.scan(store, now=time.time() + 1800, force=True) == (0, 0)  # not old enough yet
    expired, warned = lifetime.scan(store, now=time.time() + 3601, force=True)
    assert (expired, warned) == (6, 0)
    books = store.books()
    assert (books.bounced, books.ready, books.deferred, books.balanced) == (6, 6, 0, True), books  # 6 reports
    assert client.redis.zcard(keys.HELD_BREAKER) == 0
    expiries = [d for d in events.decode_all(client.redis.xrange(keys.EVENTS)) if d["event"] == "expired"]
    assert len(expiries) == 6 and all("5.4.7" in d["reply"] for d in expiries)
    _let_go(client, relay, work)
    assert [m for m in relay.messages if m.sender] == []  # expired mail never goes out
    reports = [m for m in relay.messages if m.sender == ""]
    assert len(reports) == 6 and all(b"Action: failed" in m.data and b"5.4.7" in m.data for m in reports)
    assert store.books().balanced and store.books().queued == 0


def test_housekeeping_expires_parked_mail(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    store = client.store
    ids = _waiting(client, relay, work)
    store.settings = store.settings.with_(max_lifetime_s=3600.0)
    # The accepted time of the parked mail moved back, as if it had waited for days.
    for msg_id in ids[PARKED]:
        client.redis.hset(keys.message(msg_id), "t", f"{time.time() - 86400:.3f}")
    run_once(store, force=True)
    books = store.books()
    assert (books.bounced, books.ready, books.deferred, books.balanced) == (2, 0, 4, True), books


def test_a_long_parked_queue_is_covered_a_bounded_page_at_a_time(client: Client, work: Callable[..., bool],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = client.store
    store.settings = store.settings.with_(max_lifetime_s=3600.0)
    for domain in ("a.example.org", "b.example.org"):
        control.pause(store, domain)
    client.enqueue_many([synthetic(n, domain="a.example.org") for n in range(5)]
                        + [synthetic(n, domain="b.example.org") for n in range(10, 14)])
    work()
    assert store.books().ready == 9 and client.redis.scard(keys.PARKED_DOMAINS) == 2
    monkeypatch.setattr(lifetime, "SCAN_PAGE", 2)
    later = time.time() + 3601
    counts = [lifetime.scan(store, now=later, force=True)[0] for _round in range(6)]
    assert all(c <= 2 for c in counts) and sum(counts) == 9, counts
    assert store.books().bounced == 9 and store.books().balanced


def test_delay_warning_is_sent_once_per_message(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    store = client.store
    store.settings = store.settings.with_(delay_warning_s=600.0, max_lifetime_s=86400.0)
    ids = _waiting(client, relay, work)
    assert lifetime.scan(store, now=time.time() + 300, force=True) == (0, 0)
    assert lifetime.scan(store, now=time.time() + 700, force=True) == (0, 6)
    assert lifetime.scan(store, now=time.time() + 800, force=True) == (0, 0)  # once only
    _let_go(client, relay, work)
    warnings = [m for m in relay.messages if m.sender == ""]
    assert len(warnings) == 6
    assert all(b"Action: delayed" in m.data and b"4.4.7" in m.data for m in warnings)
    delivered = {r for m in relay.messages if m.sender for r in m.recipients}
    assert len(delivered) == sum(len(v) for v in ids.values())  # a warning does not stop delivery
    assert store.books().balanced


def test_a_message_is_marked_warned_once_in_the_script(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    ids = _waiting(client, relay, work)
    pairs = [(i, "d") for i in ids[DEFERRED]]
    assert actions.act(client.store, "warn", pairs, "lifetime", "delay warning", audit=False) == ids[DEFERRED]
    assert actions.act(client.store, "warn", pairs, "lifetime", "delay warning", audit=False) == []
    # A message that is gone is not marked (no stray hash is made for it).
    assert actions.act(client.store, "warn", [("fffff", "l")], "lifetime", "delay warning", audit=False) == []
    assert not client.redis.exists(keys.message("fffff"))


def test_delay_warnings_are_off_by_default(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    _waiting(client, relay, work)
    assert client.store.settings.delay_warning_s == 0
    assert lifetime.scan(client.store, now=time.time() + 4 * 86400, force=True) == (0, 0)
