"""Retry, bounces and lifetimes against a relay scripted to misbehave. Time is injected:
deferred mail is promoted by naming the moment, nothing waits for a backoff."""

from __future__ import annotations

import json
from collections.abc import Callable
from email import message_from_bytes
from email.policy import default
from typing import Any

import pytest

from drain.demo.seeding import synthetic
from drain.demo.sink import DROP, Received, Sink, Stall, free_port
from drain.intake.api import Client
from drain.observe.deferred import records
from drain.settings import Settings
from drain.store import keys, tenancy
from tests.conftest import wait_for

FAR = 10**10  # a moment after every backoff


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """conftest's settings with the default quick retry (conftest turns it off)."""
    return settings.with_(retry_quick_s=Settings().retry_quick_s)


def _ids(relay: Sink) -> list[str]:
    return [m.message_id for m in relay.messages]


def test_transient_failures_on_a_share_of_messages_are_retried(client: Client, relay: Sink,
                                                               work: Callable[..., bool]) -> None:
    failed_once: set[str] = set()

    def flaky(_index: int, msg: Received) -> str | None:
        if int(msg.message_id.split("-")[1].split("@")[0]) % 5 == 0 and msg.message_id not in failed_once:
            failed_once.add(msg.message_id)
            return "451 4.3.0 temporary local problem"
        return None

    relay.set_policy(data_policy=flaky)
    client.enqueue_many([synthetic(i) for i in range(50)])
    work()
    books = client.store.books()
    assert (books.delivered, books.deferred) == (40, 10)
    rows = list(records(client.store))
    assert all(r.attempts == 1 and r.last_reply.startswith("451 4.3.0") for r in rows)
    client.store.promote_due(now=FAR)
    work()
    books = client.store.books()
    assert (books.delivered, books.queued) == (50, 0)
    assert sorted(_ids(relay)) == sorted(f"<synthetic-{i}@sender.example.com>" for i in range(50))


def test_retry_schedule_follows_the_backoff_policy(client: Client, relay: Sink, work: Callable[..., bool],
                                                   settings: Settings) -> None:
    relay.set_policy(data_policy=lambda _i, _m: "451 4.3.0 try again")
    (msg_id,) = client.enqueue_many([synthetic(1)]).ids
    delays = []
    for attempt in range(1, 7):
        work()
        (row,) = records(client.store)
        assert row.attempts == attempt
        delays.append(row.next_attempt_at - row.history[-1]["at"])
        client.store.promote_due(now=FAR)
    first, cap = settings.retry_first_s, settings.retry_max_s
    assert delays.pop(0) <= settings.retry_quick_s * 1.2 + 0.01  # the quick retry takes the first step
    for n, delay in enumerate(delays, 2):
        floor = min(first * 2 ** (n - 1), cap)
        assert floor - 1 <= delay <= min(floor + first * 0.2, cap) + 1, (n, delay)
    assert len(relay.messages) == 0 and client.store.books().ready == 1
    assert json.loads(client.redis.hget(keys.message(msg_id), "hist") or b"[]")[-1]["n"] == 6


@pytest.mark.parametrize("answer", ["421 4.7.0 try again later", "451 4.7.1 too many messages, slow down"])
def test_a_slow_down_waits_the_first_step_each_time(client: Client, relay: Sink, work: Callable[..., bool],
                                                    settings: Settings, answer: str) -> None:
    """A "slow down" is about the pace to the domain (its adaptive rate halves), not about the
    message: the message's delay does not double. Mutant caught: next_try_in ignoring
    `throttled` (the delays then go first, 2 x first, 4 x first...)."""
    relay.set_policy(data_policy=lambda _i, _m: answer)
    client.enqueue_many([synthetic(1)])
    first = settings.retry_first_s
    for attempt in range(1, 5):
        work()
        (row,) = records(client.store)
        assert row.attempts == attempt
        delay = row.next_attempt_at - row.history[-1]["at"]
        assert first - 1 <= delay <= first * 1.2 + 1, (attempt, delay)
        client.store.promote_due(now=FAR)


def test_a_slow_down_beside_another_4xx_keeps_the_doubling(client: Client, relay: Sink,
                                                            work: Callable[..., bool], settings: Settings) -> None:
    """One recipient slowed down, another refused for itself: the message's own trouble sets the
    delay. Mutant caught: `throttled` true when any (not every) refusal was a slow-down."""
    relay.set_policy(rcpt_policy=lambda r: "450 4.7.1 rate limited" if r.startswith("a@") else "450 4.2.1 busy")
    client.enqueue(synthetic(1), recipients=["a@example.org", "b@example.org"])
    work()
    for _attempt in range(2):
        client.store.promote_due(now=FAR)
        work()
    (row,) = records(client.store)
    assert row.attempts == 3 and row.next_attempt_at - row.history[-1]["at"] >= 4 * settings.retry_first_s - 1


def test_some_recipients_refused_permanently_get_a_report(client: Client, relay: Sink, rclient: object,
                                                          settings: Settings, work: Callable[..., bool]) -> None:
    relay.set_policy(rcpt_policy=lambda r: f"550 5.1.1 <{r}>: mailbox unknown" if r.startswith("gone") else None)
    dsn_client = Client(client.redis, settings.with_(dsn=True))
    dsn_client.enqueue(synthetic(1), sender="author@example.com",
                       recipients=["a@example.org", "gone@example.org", "b@example.net"])
    work(dsn=True)
    books = client.store.books()
    # The message counts once, as delivered; the refused recipient is logged and reported.
    assert books.delivered == 2 and books.bounced == 0 and books.accepted == 2
    # One delivery per destination domain, then the report.
    org, net, report = relay.messages
    assert (org.recipients, net.recipients) == (("a@example.org",), ("b@example.net",))
    assert report.sender == "" and report.recipients == ("author@example.com",)
    parsed = message_from_bytes(report.data, policy=default)
    assert parsed.get_content_type() == "multipart/report"
    status = next(p for p in parsed.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Final-Recipient: rfc822; gone@example.org" in text and "Status: 5.1.1" in text
    (entry,) = client.redis.xrange(keys.BOUNCES)
    assert b"gone@example.org" in entry[1][b"reply"]


def test_a_bounce_is_never_bounced(client: Client, relay: Sink, settings: Settings,
                                   work: Callable[..., bool]) -> None:
    relay.set_policy(rcpt_policy=lambda _r: "550 5.1.1 no such user")
    Client(client.redis, settings.with_(dsn=True)).enqueue(synthetic(1), sender="", recipients=["x@example.org"])
    work(dsn=True)
    books = client.store.books()
    assert (books.bounced, books.accepted, len(relay.messages)) == (1, 1, 0)


def test_partial_delivery_defers_only_the_rest(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    busy = {"later@example.net"}
    relay.set_policy(rcpt_policy=lambda r: "452 4.2.2 mailbox full" if r in busy else None)
    (msg_id,) = client.enqueue_many([synthetic(1)]).ids
    client.redis.hset(keys.message(msg_id), "env",
                      json.dumps(["s@example.com", ["now@example.org", "later@example.net"]]))
    work()
    books = client.store.books()
    assert (books.delivered, books.deferred) == (0, 1)
    (row,) = records(client.store)
    assert row.recipients == ["later@example.net"]
    busy.clear()
    client.store.promote_due(now=FAR)
    work()
    books = client.store.books()
    assert (books.delivered, books.deferred, books.accepted) == (1, 0, 1)
    assert [m.recipients for m in relay.messages] == [("now@example.org",), ("later@example.net",)]


def test_partly_delivered_message_whose_rest_bounces_counts_as_delivered(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    answer = {"later@example.net": "452 4.2.2 mailbox full"}
    relay.set_policy(rcpt_policy=lambda r: answer.get(r))
    (msg_id,) = client.enqueue_many([synthetic(1)]).ids
    client.redis.hset(keys.message(msg_id), "env",
                      json.dumps(["s@example.com", ["now@example.org", "later@example.net"]]))
    work()
    answer["later@example.net"] = "550 5.1.1 gone for good"
    client.store.promote_due(now=FAR)
    work()
    books = client.store.books()
    assert (books.delivered, books.bounced, books.queued) == (1, 0, 0)


def test_connection_dropped_before_the_end_of_data_is_retried_at_once(client: Client, relay: Sink,
                                                                       work: Callable[..., bool]) -> None:
    """A drop before the message's final dot (here at RCPT) is retried at once on a new
    connection: the relay cannot have taken it. A drop after the final dot defers instead
    (tests/test_hostile_relay.py): the relay may have taken it."""
    dropped: list[str] = []
    take = relay.handler.handle_RCPT

    async def drop_first(server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address.startswith("user3@") and not dropped:
            dropped.append(address)
            server.transport.close()
            return "421 4.4.2 connection dropped"
        return await take(server, session, envelope, address, options)

    relay.handler.handle_RCPT = drop_first  # type: ignore[method-assign]
    client.enqueue_many([synthetic(i) for i in range(6)])
    work()
    books = client.store.books()
    assert dropped and (books.delivered, books.deferred) == (6, 0)
    assert _ids(relay).count("<synthetic-3@sender.example.com>") == 1


def test_repeated_drops_defer(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    relay.set_policy(data_policy=lambda _i, _m: DROP)
    client.enqueue_many([synthetic(i) for i in range(2)])
    work()
    assert client.store.books().deferred == 2
    assert all(r.attempts == 1 for r in records(client.store))


def test_tarpit_times_out_and_defers(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    relay.set_policy(data_policy=lambda i, _m: Stall(seconds=3) if i == 0 else None)
    client.enqueue_many([synthetic(i) for i in range(3)])
    work(relay_timeout_s=0.5)
    books = client.store.books()
    assert (books.deferred, books.delivered) == (1, 2)
    (row,) = records(client.store)
    assert "timeout" in row.last_reply.lower() or "timed out" in row.last_reply.lower()


def test_relay_down_then_back(client: Client, settings: Settings, work: Callable[..., bool]) -> None:
    port = free_port()
    down = settings.with_(relay=f"smtp://127.0.0.1:{port}", breaker_failures=1000)
    client.enqueue_many([synthetic(i) for i in range(5)])
    work(relay=down.relay, breaker_failures=1000, relay_breaker_failures=1000)
    assert client.store.books().deferred == 5
    assert "ConnectionRefused" in next(records(client.store)).last_reply
    with Sink(port=port) as back:
        client.store.promote_due(now=FAR)
        work(relay=down.relay, relay_breaker_failures=1000)
        assert client.store.books().delivered == 5
        assert len(back.messages) == 5


def test_circuit_breaker_holds_a_failing_destination_only(client: Client, relay: Sink,
                                                          work: Callable[..., bool]) -> None:
    relay.set_policy(rcpt_policy=lambda r: "421 4.7.0 slow down" if r.endswith("@busy.example.com") else None)
    from drain.intake.api import Submission

    client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@{'busy' if i % 2 else 'calm'}.example.com",))
                         for i in range(20)])
    work(breaker_failures=3, batch_size=50)
    books = client.store.books()
    assert books.delivered == 10 and books.deferred == 10
    rows = list(records(client.store))
    tried = [r for r in rows if r.attempts == 1]
    held = [r for r in rows if r.attempts == 0]
    assert len(tried) == 3 and len(held) == 7
    assert all("circuit breaker open for busy.example.com" in r.last_reply for r in held)
    status = client.status().as_dict()
    assert status["breakers_open"] == ["busy.example.com"]


def test_breaker_closes_after_a_success(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    answer: dict[str, str | None] = {"v": "421 4.7.0 slow down"}
    relay.set_policy(rcpt_policy=lambda _r: answer["v"])
    client.enqueue_many([synthetic(i, domain="busy.example.com") for i in range(6)])
    work(breaker_failures=2, breaker_cooldown_s=0.0)
    assert client.status().breakers_open == []  # cool-down of zero: open until now
    answer["v"] = None

    def drained() -> bool:
        client.store.promote_due(now=FAR)
        work(breaker_failures=2, breaker_cooldown_s=0.0)
        return client.store.books().delivered == 6

    # The 421s also slowed the domain's adaptive rate, so it may take a few rounds.
    wait_for(drained, what="the domain to drain")
    assert client.redis.hgetall(keys.BREAKER_TRIPS) == {}


def test_message_past_its_lifetime_bounces_as_expired(client: Client, relay: Sink,
                                                      work: Callable[..., bool]) -> None:
    relay.set_policy(data_policy=lambda _i, _m: "451 4.3.0 later")
    client.enqueue(synthetic(1))
    work(max_lifetime_s=1.0)
    assert client.store.books().deferred == 1
    client.store.promote_due(now=FAR)
    # Age the message past its lifetime, then try again.
    (msg_id,) = tenancy.ready_ids(client.redis, "backlog")
    client.redis.hset(keys.message(msg_id), "t", "1000")
    work(max_lifetime_s=1.0)
    books = client.store.books()
    assert (books.bounced, books.queued) == (1, 0)
    (entry,) = client.redis.xrange(keys.BOUNCES)
    assert entry[1][b"reply"].startswith(b"expired: 451")


def _wait_after_first_try(client: Client, relay: Sink, work: Callable[..., bool], answer: str) -> float:
    relay.set_policy(data_policy=lambda _i, _m: answer)
    client.enqueue_many([synthetic(1)])
    work()
    (row,) = records(client.store)
    assert row.attempts == 1
    return float(row.next_attempt_at - row.history[-1]["at"])


def test_a_4xx_about_the_message_on_its_first_try_is_retried_about_a_second_later(
        client: Client, relay: Sink, work: Callable[..., bool], settings: Settings) -> None:
    assert settings.retry_first_s >= 60  # the schedule's first step is far longer
    wait = _wait_after_first_try(client, relay, work, "451 4.3.0 temporary local problem")
    # (the due time counts from the attempt's start, the history from its settle: a little less)
    assert settings.retry_quick_s - 0.5 <= wait <= settings.retry_quick_s * 1.2 + 0.01


def test_a_recipient_refused_with_a_4xx_on_the_first_try_gets_the_quick_retry_too(
        client: Client, relay: Sink, work: Callable[..., bool], settings: Settings) -> None:
    relay.set_policy(rcpt_policy=lambda r: "450 4.2.1 mailbox busy" if r.startswith("busy") else None)
    client.enqueue(synthetic(1), recipients=["busy@example.org", "ok@example.org"])
    work()
    (row,) = records(client.store)
    assert row.next_attempt_at - row.history[-1]["at"] <= settings.retry_quick_s * 1.2 + 0.01


def test_a_421_or_a_dead_relay_waits_the_schedule_not_the_quick_retry(
        client: Client, relay: Sink, work: Callable[..., bool], settings: Settings) -> None:
    assert _wait_after_first_try(client, relay, work, "421 4.7.0 slow down") >= settings.retry_first_s - 1
    client.store.promote_due(now=FAR)
    relay.set_policy(data_policy=lambda _i, _m: DROP)
    work()
    (row,) = records(client.store)
    assert row.attempts == 2 and row.next_attempt_at - row.history[-1]["at"] >= 2 * settings.retry_first_s - 1


def test_the_quick_retry_comes_once(client: Client, relay: Sink, work: Callable[..., bool],
                                    settings: Settings) -> None:
    _wait_after_first_try(client, relay, work, "451 4.3.0 still busy")
    client.store.promote_due(now=FAR)
    work()
    (row,) = records(client.store)
    assert row.attempts == 2 and row.next_attempt_at - row.history[-1]["at"] >= 2 * settings.retry_first_s - 1


def test_a_4xx_that_says_slow_down_waits_the_schedule_not_the_quick_retry(
        client: Client, relay: Sink, work: Callable[..., bool], settings: Settings) -> None:
    # A relay that rate-limits says so with a 4.7.x or "too many": sending again a second
    # later is what it asked drain not to do (the domain's adaptive rate halves too).
    wait = _wait_after_first_try(client, relay, work, "451 4.7.1 too many messages, slow down")
    assert wait >= settings.retry_first_s - 1


def _after_one_refused_rcpt(client: Client, relay: Sink, work: Callable[..., bool], reply: str) -> Any:
    """The deferred record after the relay refused a@ with `reply` and took b@."""
    relay.set_policy(rcpt_policy=lambda r: reply if r.startswith("a@") else None)
    client.enqueue(synthetic(1), recipients=["a@example.org", "b@example.org"])
    work()
    (row,) = records(client.store)
    return row


def test_a_recipient_refused_with_a_slow_down_4xx_waits_the_schedule(
        client: Client, relay: Sink, work: Callable[..., bool], settings: Settings) -> None:
    row = _after_one_refused_rcpt(client, relay, work, "450 4.7.1 rate limited, try later")
    assert row.next_attempt_at - row.history[-1]["at"] >= settings.retry_first_s - 1


def test_a_session_reply_at_rcpt_is_no_verdict_on_the_message_and_gets_no_quick_retry(
        client: Client, relay: Sink, work: Callable[..., bool], settings: Settings) -> None:
    # "530 authenticate first" at RCPT is the configuration's trouble: it defers, and
    # trying again in a second would change nothing.
    row = _after_one_refused_rcpt(client, relay, work, "530 5.7.0 Authentication required")
    assert row.last_reply.startswith('{"a@example.org": "530')
    assert row.next_attempt_at - row.history[-1]["at"] >= settings.retry_first_s - 1
