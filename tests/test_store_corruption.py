"""Damaged stored data (a bad field, a key of the wrong type, a garbage counter) costs one
message at most: it is quarantined as store.corrupt (its raw bytes intact) or dropped and
counted as deleted, and neither its batch, nor `drain status`, nor the status page stops."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner

from drain.cli import cli
from drain.demo.seeding import DOMAINS, synthetic
from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.message import envelope_from_headers
from drain.observe import page as statuspage
from drain.observe.model import Reader
from drain.observe.snapshot import Snapshots
from drain.settings import Settings
from drain.store import keys, tenancy

BOOK_KEYS = ["accepted", "ready", "deferred", "in_flight", "delivered", "bounced", "quarantined", "deleted"]
# Every field a queued message may have (the ones workers read, and the rest).
ALL_FIELDS = ["raw", "env", "t", "n", "force", "slot", "fr", "strikes", "hist", "pd", "dom", "last"]
DAMAGE: dict[str, bytes | None] = {
    "missing": None,
    "empty": b"",
    "garbage": b"notafloat \x00\x1b[2J[/x]",
    "huge": b"9" * 400,
    "far-future": b"1e300",
    "negative": b"-5",
    "nan": b"nan",
    "inf": b"inf",
    "bad-utf8": b"\xff\xfe\x80\xc3",
    "bad-json": b'{"sender": ["a@b.c",',
    "json-object": b'{"a": 1}',
}
GOOD = 3


def status_json(settings: Settings) -> dict[str, object]:
    """`drain status --json` through the real command, on the test Redis."""
    result = CliRunner().invoke(cli, ["status", "--json"], env={"DRAIN_REDIS_URL": settings.redis_url or ""},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


def assert_page_answers(client: Client) -> None:
    snapshots = Snapshots(Reader(client.store).read)
    assert snapshots.refresh(), snapshots.last_error
    assert "drain" in statuspage.render(snapshots.view())


def where(rclient: redis.Redis, msg_id: str) -> str:
    """Where a message is now: a queue it still waits in, quarantine, or gone."""
    if rclient.hexists(keys.INFLIGHT, msg_id):
        return "in_flight"
    if msg_id in tenancy.ready_ids(rclient, "fresh") + tenancy.ready_ids(rclient, "backlog"):
        return "ready"
    if msg_id.encode() in rclient.lrange(keys.SUSPECT, 0, -1):
        return "ready"
    if rclient.zscore(keys.DEFERRED, msg_id) is not None:
        return "deferred"
    if rclient.zscore(keys.QUARANTINE, msg_id) is not None:
        return "quarantined"
    return "gone"


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_field_costs_one_message_never_its_batch(
        damage: str, client: Client, rclient: redis.Redis, relay: Sink, settings: Settings,
        work: Callable[..., bool]) -> None:
    # Every destination has a (generous) cap, so the domain gate reads the stored send times too.
    for domain in DOMAINS:
        ratelimit.set_domain(rclient, domain, 10000.0)
    # One victim per field, each at the head of the ready list, then good mail behind them.
    victims = {name: client.enqueue(synthetic(100 + n)) for n, name in enumerate(ALL_FIELDS)}
    good = client.enqueue_many([synthetic(i) for i in range(GOOD)]).ids
    value = DAMAGE[damage]
    for name, msg_id in victims.items():
        if value is None:
            rclient.hdel(keys.message(msg_id), name)
        else:
            rclient.hset(keys.message(msg_id), name, value)

    work()

    delivered = {m.message_id for m in relay.messages}
    assert {f"<synthetic-{i}@sender.example.com>" for i in range(GOOD)} <= delivered
    books = client.store.books()
    assert books.balanced and books.queued == 0, books
    for name, msg_id in victims.items():
        place = where(rclient, msg_id)
        assert place in {"quarantined", "gone"}, (name, place)
        if place == "quarantined":
            # Quarantined mail is readable: its time and envelope are sound again.
            fields = rclient.hmget(keys.message(msg_id), ["raw", "env", "t", "why"])
            assert all(f is not None for f in fields), (name, fields)
            float(fields[2] or b"")
            json.loads(fields[1] or b"")
        else:
            assert not rclient.exists(keys.message(msg_id)), name
    assert all(where(rclient, i) == "gone" for i in good)
    doc = status_json(settings)
    assert doc["accepted"] == sum(int(doc[k]) for k in BOOK_KEYS[1:])  # type: ignore[call-overload]
    assert_page_answers(client)


@pytest.mark.parametrize("kind", ["list", "string", "gone"])
def test_a_message_key_of_the_wrong_type_is_dropped_and_counted(
        kind: str, client: Client, rclient: redis.Redis, relay: Sink, settings: Settings,
        work: Callable[..., bool]) -> None:
    victim = client.enqueue(synthetic(99))
    good = client.enqueue_many([synthetic(i) for i in range(GOOD)]).ids
    rclient.delete(keys.message(victim))
    if kind == "list":
        rclient.rpush(keys.message(victim), b"raw", b"x")
    elif kind == "string":
        rclient.set(keys.message(victim), b"notahash")

    work()

    assert relay.accepted == GOOD
    books = client.store.books()
    assert books.balanced and books.queued == 0 and books.deleted == 1, books
    assert not rclient.exists(keys.message(victim))
    assert all(where(rclient, i) == "gone" for i in good)
    assert status_json(settings)["deleted"] == 1
    assert_page_answers(client)


def test_the_head_of_ready_with_a_bad_time_does_not_stall_status_or_the_page(
        client: Client, rclient: redis.Redis, settings: Settings) -> None:
    """The issue's reproduction, before any worker runs: status reads past the damage."""
    victim = client.enqueue(synthetic(1))
    client.enqueue(synthetic(2))
    rclient.hset(keys.message(victim), "t", b"notafloat")
    doc = status_json(settings)
    assert doc["ready"] == 2 and doc["oldest_age_s"] is not None
    assert_page_answers(client)


@pytest.mark.parametrize(("key", "value"), [
    (keys.RATE, b"garbage"),
    (keys.RATE, b"nan"),
    (keys.BURST, b"nan"),
    (keys.PACE, b"x y z"),
    (keys.BOOKS, b"wrongtype"),
    (keys.READY_COUNT, b"wrongtype"),
    (keys.DOMAIN_RATES, b"wrongtype"),
])
def test_damaged_counters_and_settings_leave_status_and_the_page_answering(
        key: str, value: bytes, client: Client, rclient: redis.Redis, settings: Settings) -> None:
    client.enqueue(synthetic(1))
    if key == keys.PACE:
        rclient.lpush(key, value, b"1 2")
    else:
        rclient.delete(key)
        rclient.set(key, value)
    rclient.hset(keys.DOMAIN_EFFECTIVE, "example.com", b"garbage")
    rclient.hset(keys.DOMAIN_CONCURRENCY, "example.com", b"1e999")
    doc = status_json(settings)
    assert set(BOOK_KEYS) <= set(doc)
    if value != b"wrongtype":  # the page's metrics still read whole keys of the wrong type as an outage
        assert_page_answers(client)
    if key == keys.RATE:
        # A global rate that cannot be read holds delivery rather than lifting the limit.
        assert doc["delivery_held"] == "rate 0"
    # The books are left for the test's own check: repair what was planted in them.
    rclient.delete(key)
    if key in (keys.BOOKS, keys.READY_COUNT):
        rclient.flushdb()


@pytest.mark.parametrize("name", ["env", "t", "n", "qt", "why", "hist", "audit"])
def test_a_damaged_quarantined_message_is_still_listed_and_shown(
        name: str, client: Client, rclient: redis.Redis, settings: Settings) -> None:
    """The read side decodes with the store's one decoder: a field it cannot read is shown
    at its default (findings: store.corrupt) and the rest of the quarantine still lists."""
    why = json.dumps([{"code": "rule.match", "detail": "test"}])
    victim, other = client.store.enqueue_many(
        [(synthetic(i), envelope_from_headers(synthetic(i)), why) for i in (1, 2)])
    rclient.hset(keys.message(victim), name, DAMAGE["garbage"] or b"")
    env = {"DRAIN_REDIS_URL": settings.redis_url or ""}
    listed = CliRunner().invoke(cli, ["quarantine", "list", "--json"], env=env, catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    assert {victim, other} <= {json.loads(line)["id"] for line in listed.stdout.splitlines() if line.strip()}
    shown = CliRunner().invoke(cli, ["quarantine", "show", victim, "--json"], env=env, catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    if name == "why":
        assert json.loads(shown.stdout)["reasons"] == ["store.corrupt"]
    assert_page_answers(client)
