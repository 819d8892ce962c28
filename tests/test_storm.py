"""The 5xx storm guard (drain/worker/storm.py): a relay that refuses everything defers the
backlog instead of bouncing it; a relay that refuses one domain's mailboxes still bounces them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner

from drain.cli import cli
from drain.demo.sink import Sink
from drain.flow.breaker import Breakers
from drain.intake.api import Client
from drain.ops import actions
from drain.ops.select import Selector
from drain.settings import Settings
from drain.store import keys
from drain.worker import routing, storm
from drain.worker.delivery import Result

MESSAGES = 300
DOMAINS = 20
N = 50  # DRAIN_STORM_REPLIES' default


def raw(i: int) -> bytes:
    return (f"From: a@sender.example\r\nTo: x@example.com\r\nSubject: storm {i}\r\n"
            f"Message-ID: <storm-{i}@t>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nbody {i}\r\n").encode()


def enqueue_spread(client: Client, count: int, domains: int) -> list[str]:
    return [client.enqueue(raw(i), sender="a@sender.example", recipients=[f"user{i}@d{i % domains}.example"])
            for i in range(count)]


def storm_trip(client: Client, relay: Sink, work: Callable[..., bool], caplog: pytest.LogCaptureFixture) -> int:
    """300 messages to 20 domains through a relay answering 550 to every recipient: returns bounced."""
    asked: list[str] = []

    def refuse(rcpt: str) -> str:
        asked.append(rcpt)
        return "550 5.7.1 relaying denied"

    relay.set_policy(rcpt_policy=refuse)
    enqueue_spread(client, MESSAGES, DOMAINS)
    with caplog.at_level(logging.ERROR, logger="drain.worker.storm"):
        work()
    books = client.store.books()
    assert books.bounced == N - 1, f"the guard let {books.bounced} messages bounce"  # the Nth is deferred
    assert books.delivered == 0
    # Its breaker opened at the trip: the relay was asked about a few more at most (the other lane's).
    assert len(asked) <= N + 3, len(asked)
    assert books.deferred == MESSAGES - books.bounced  # the rest waits: deferred or held by the breaker
    told = [r for r in caplog.records if r.name == "drain.worker.storm" and r.levelno == logging.ERROR]
    assert len(told) == 1, "told at ERROR once"
    assert "refusing everything: 550 5.7.1 relaying denied" in told[0].getMessage()
    assert f"{books.bounced} messages were bounced" in told[0].getMessage()
    return books.bounced


def deliver_rest(client: Client, relay: Sink, work: Callable[..., bool], bounced: int) -> None:
    actions.run(client.store, "flush", Selector(older_than_s=0.0))
    work()
    books = client.store.books()
    assert (books.delivered, books.bounced, books.queued) == (MESSAGES - bounced, bounced, 0)
    assert client.redis.hlen(keys.RELAY_STORM) == 0


def test_a_relay_refusing_everything_defers_the_backlog_until_an_operator_clears_it(
        client: Client, relay: Sink, work: Callable[..., bool], settings: Settings,
        caplog: pytest.LogCaptureFixture) -> None:
    bounced = storm_trip(client, relay, work, caplog)
    state = routing.relay_states(client.redis, settings)["(relay)"]
    assert state["open"] is True
    assert state["refusing"] == {"reply": "550 5.7.1 relaying denied", "since": pytest.approx(time.time(), abs=60),
                                 "bounced": bounced}
    env = {"DRAIN_REDIS_URL": settings.redis_url or "", "DRAIN_RELAY": settings.relay, "COLUMNS": "300"}
    shown = CliRunner().invoke(cli, ["status"], env=env, catch_exceptions=False)
    assert "REFUSING EVERYTHING: 550 5.7.1 relaying denied" in shown.stdout, shown.stdout
    routes = CliRunner().invoke(cli, ["route", "list"], env=env, catch_exceptions=False)
    assert "refusing everything: 550 5.7.1 relaying denied" in routes.stdout, routes.stdout
    relay.set_policy()
    closed = CliRunner().invoke(cli, ["breaker", "close", "(relay)"], env=env, catch_exceptions=False)
    assert closed.exit_code == 0, closed.output
    assert routing.relay_states(client.redis, settings)["(relay)"]["refusing"] is None
    deliver_rest(client, relay, work, bounced)


def test_a_probe_delivery_through_the_relay_clears_the_guard(
        client: Client, relay: Sink, work: Callable[..., bool], caplog: pytest.LogCaptureFixture) -> None:
    bounced = storm_trip(client, relay, work, caplog)
    relay.set_policy()
    # The breaker's cool-down is over: its held mail goes again, the first delivery is the probe.
    client.redis.hset(keys.BREAKER_OPEN, "(relay)", f"{time.time() - 1:.3f}")
    deliver_rest(client, relay, work, bounced)


def test_while_marked_a_relay_s_5xx_defer_and_reopen_its_breaker(
        client: Client, relay: Sink, work: Callable[..., bool], caplog: pytest.LogCaptureFixture) -> None:
    bounced = storm_trip(client, relay, work, caplog)
    # The cool-down is over but the relay still refuses: the probe's 5xx defers, nothing more bounces.
    client.redis.hset(keys.BREAKER_OPEN, "(relay)", f"{time.time() - 1:.3f}")
    actions.run(client.store, "flush", Selector(older_than_s=0.0))
    work()
    books = client.store.books()
    assert (books.bounced, books.deferred) == (bounced, MESSAGES - bounced)
    assert client.redis.hexists(keys.RELAY_STORM, "(relay)")
    assert float(client.redis.hget(keys.BREAKER_OPEN, "(relay)") or 0) > time.time()


def test_a_relay_refusing_one_domain_still_bounces_that_domain(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    relay.set_policy(rcpt_policy=lambda rcpt: "550 5.1.1 no such user" if rcpt.endswith("@d0.example") else None)
    enqueue_spread(client, MESSAGES, DOMAINS)
    work()
    books = client.store.books()
    assert (books.bounced, books.delivered) == (MESSAGES // DOMAINS, MESSAGES - MESSAGES // DOMAINS)
    assert client.redis.hlen(keys.RELAY_STORM) == 0


def test_many_refusals_for_one_domain_are_not_a_storm(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """More than N refusals in a row, all for one domain's mailboxes: the recipients' fault."""
    relay.set_policy(rcpt_policy=lambda rcpt: "550 5.1.1 no such user")
    enqueue_spread(client, 2 * N, 1)
    work()
    assert client.store.books().bounced == 2 * N
    assert client.redis.hlen(keys.RELAY_STORM) == 0


def test_the_guard_can_be_turned_off(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    relay.set_policy(rcpt_policy=lambda rcpt: "550 5.7.1 relaying denied")
    enqueue_spread(client, 2 * N, DOMAINS)
    work(storm_replies=0)
    assert client.store.books().bounced == 2 * N


def refusals(guard: storm.Storm, breakers: Breakers, text: str = "550 5.7.1 denied") -> list[Result]:
    code, _sp, words = text.partition(" ")
    return [guard.judge("(relay)", f"d{i % DOMAINS}.example", Result("bounced", int(code), words), breakers,
                        time.time()) for i in range(N)]


def test_a_claim_read_from_before_a_trip_keeps_the_mark(rclient: redis.Redis, settings: Settings) -> None:
    """A lane's claim read queued before another lane tripped the guard does not undo its mark."""
    guard, breakers = storm.Storm(rclient, settings), Breakers(rclient, settings)
    pipe = rclient.pipeline(transaction=False)
    guard.queue(pipe)
    before = pipe.execute()  # read before the trip: no mark yet
    assert [r.kind for r in refusals(guard, breakers)][-1] == "deferred"
    guard.take(before[0])
    assert guard.judge("(relay)", "d1.example", Result("bounced", 550, "denied"), breakers, time.time()).kind == \
        "deferred"


def test_the_relay_s_text_is_shown_without_control_characters(rclient: redis.Redis, settings: Settings) -> None:
    guard, breakers = storm.Storm(rclient, settings), Breakers(rclient, settings)
    refusals(guard, breakers, "554 \x1b[2J\x1b]8;;http://x\x07blocked\u202e here")
    (shown,) = storm.states(rclient).values()
    assert shown["reply"] == "554 [2J ]8;;http://x blocked here"
