"""Faults of the relay, the configuration or drain defer and count on the relay's breaker;
only a permanent reply about the message or a recipient bounces (at a real aiosmtpd sink)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.flow.breaker import RELAY, Breakers
from drain.intake.api import Client
from drain.observe.deferred import records


def _breaker(client: Client, name: str) -> dict[str, float]:
    return Breakers(client.redis, client.settings).states().get(name, {})


def _assert_all_deferred(client: Client, count: int) -> None:
    books = client.store.books()
    assert books.bounced == 0, books
    assert books.delivered == 0 and books.deferred == count, books


def test_relay_without_starttls_defers_everything_and_opens_the_breaker(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    client.enqueue_many([synthetic(i) for i in range(20)])
    url = f"smtp+starttls://127.0.0.1:{relay.port}"  # the sink offers no STARTTLS

    work(relay=url, breaker_failures=5)

    _assert_all_deferred(client, 20)
    assert relay.accepted == 0
    assert _breaker(client, RELAY).get("open_until", 0) > 0, "the relay's breaker did not open"
    assert all(r.last_reply for r in records(client.store))


@pytest.fixture
def auth_relay() -> Iterator[Sink]:
    """A sink that offers AUTH and refuses every login (535)."""

    def refuse(*_args: Any) -> AuthResult:
        return AuthResult(success=False, handled=False)

    sink = Sink(keep=True)
    sink.controller = Controller(sink.handler, hostname="127.0.0.1", port=sink.port, authenticator=refuse,
                                 auth_require_tls=False, server_hostname="sink.drain.test", ready_timeout=10)
    with sink:
        yield sink


def test_auth_refused_defers_and_counts_on_the_relay(client: Client, auth_relay: Sink,
                                                     work: Callable[..., bool]) -> None:
    client.enqueue_many([synthetic(i, domain="example.org") for i in range(4)])

    work(relay=f"smtp://drain:wrong@127.0.0.1:{auth_relay.port}", breaker_failures=100)

    _assert_all_deferred(client, 4)
    assert auth_relay.accepted == 0
    assert all(r.last_reply.startswith("535") for r in records(client.store))
    # A wrong password is the relay session's trouble, not example.org's.
    assert _breaker(client, RELAY).get("failures") == 4
    assert _breaker(client, "example.org") == {}


def test_authentication_required_at_rcpt_defers(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    # A 530 is a 5xx at RCPT TO, but it says "log in first": the configuration's fault.
    relay.set_policy(rcpt_policy=lambda _r: "530 5.7.0 Authentication required")
    client.enqueue_many([synthetic(i) for i in range(3)])

    work(breaker_failures=100)

    _assert_all_deferred(client, 3)
    assert _breaker(client, RELAY).get("failures") == 3


def test_relay_without_smtputf8_defers_internationalized_addresses(
        client: Client, settings: object, work: Callable[..., bool]) -> None:
    sink = Sink(keep=True)
    sink.controller = Controller(sink.handler, hostname="127.0.0.1", port=sink.port, enable_SMTPUTF8=False,
                                 server_hostname="sink.drain.test", ready_timeout=10)
    with sink:
        client.enqueue(synthetic(1), recipients=["jörg@example.com"])
        work(relay=sink.url, breaker_failures=100)
        _assert_all_deferred(client, 1)
        assert sink.accepted == 0
    (record,) = records(client.store)
    assert "SMTPUTF8" in record.last_reply


def test_a_permanent_refusal_of_a_recipient_still_bounces(client: Client, relay: Sink,
                                                         work: Callable[..., bool]) -> None:
    relay.set_policy(rcpt_policy=lambda r: "550 5.1.1 no such user" if r.startswith("user1@") else None)
    client.enqueue_many([synthetic(i) for i in range(3)])

    work()

    books = client.store.books()
    assert books.bounced == 1 and books.delivered == 2 and books.deferred == 0
    assert _breaker(client, RELAY) == {}


def test_greeting_refused_at_ehlo_and_helo_defers(client: Client, work: Callable[..., bool]) -> None:
    class RefuseHello:
        async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                              responses: list[str]) -> list[str]:
            return ["550 5.7.1 you are not welcome here"]

        async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
            return "550 5.7.1 you are not welcome here"

    sink = Sink(keep=True)
    sink.controller = Controller(RefuseHello(), hostname="127.0.0.1", port=sink.port,
                                 server_hostname="sink.drain.test", ready_timeout=10)
    client.enqueue_many([synthetic(i, domain="example.org") for i in range(3)])
    with sink:
        work(relay=sink.url, breaker_failures=100)
    _assert_all_deferred(client, 3)
    assert all(r.last_reply.startswith("550") for r in records(client.store))
    assert _breaker(client, RELAY).get("failures") == 3 and _breaker(client, "example.org") == {}
