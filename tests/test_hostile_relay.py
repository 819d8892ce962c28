"""A hostile relay (a real aiosmtpd sink): what it receives, message by message, and what
drain makes of replies that are lost, odd or about part of the recipients."""

from __future__ import annotations

from collections.abc import Callable

from drain.demo.seeding import synthetic
from drain.demo.sink import DROP, Received, Sink
from drain.intake.api import Client
from drain.observe.deferred import records


def test_a_reply_lost_after_the_final_dot_defers_without_sending_again(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """The relay read the whole message, then hung up before its reply: it may have taken
    it. Sending it again at once in the same attempt doubles it; it is deferred instead
    (one copy per attempt, as for a relay that stops answering)."""
    seen: list[Received] = []

    def take_then_drop(_index: int, received: Received) -> str:
        seen.append(received)
        return DROP

    relay.set_policy(data_policy=take_then_drop)
    msg_id = client.enqueue(synthetic(1))

    work(breaker_failures=100)

    assert len(seen) == 1, f"the relay got {len(seen)} copies in one attempt"
    books = client.store.books()
    assert books.deferred == 1 and books.delivered == 0 and books.bounced == 0, books
    (record,) = records(client.store)
    assert record.id == msg_id and record.last_reply


def test_a_recipient_given_twice_gets_one_copy(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """The same mailbox twice (given twice, or with its domain in another case) is one RCPT
    at the relay: the domain part of an address is case-insensitive (RFC 5321 2.4); the
    local part is the destination's to judge, so a different local part stays."""
    raw = synthetic(1)
    client.enqueue(raw, recipients=["b@example.com", "b@example.com", "b@EXAMPLE.COM", "B@example.com"])
    head = (b"From: a@example.com\nTo: x@example.org, X@Example.Org\nCc: x@EXAMPLE.org\n"
            b"Date: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <dup@example.com>\n\nbody\n")
    client.enqueue(head)

    work()

    got = sorted(m.recipients for m in relay.messages)
    assert got == sorted([("b@example.com", "B@example.com"), ("x@example.org", "X@Example.Org")]), got
    assert client.store.books().delivered == 2


def test_a_resent_message_goes_to_its_resent_recipients_only(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """With Resent-* fields (RFC 5322 3.6.6), the envelope is the resent block's, as
    sendmail -t and Postfix take it: the original To/Cc got the message already, and so did
    the recipients of an older resent block."""
    raw = (b"Resent-From: fwd@example.net\nResent-To: new@example.org\nResent-Bcc: hidden@example.org\n"
           b"Resent-Date: Tue, 24 Nov 2026 10:00:00 +0000\nResent-Message-ID: <r1@example.net>\n"
           b"Received: from a by b; Mon, 23 Nov 2026 11:00:00 +0000\n"  # an older resent block
           b"Resent-From: first@example.net\nResent-To: older@example.org\n"
           b"Resent-Date: Mon, 23 Nov 2026 11:00:00 +0000\n"
           b"Return-Path: <a@example.com>\n"  # from the original delivery
           b"From: a@example.com\nTo: old@example.com\nCc: old2@example.com\n"
           b"Date: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <m1@example.com>\n\nbody\n")
    client.enqueue(raw)

    work()

    (got,) = relay.messages
    assert got.recipients == ("new@example.org", "hidden@example.org")
    assert got.sender == "fwd@example.net"
    assert b"hidden@" not in got.data and b"Resent-To: new@example.org" in got.data


def test_452_too_many_recipients_defers_the_rest_and_each_gets_one_copy(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """A relay that takes at most two recipients a transaction (452 4.5.3 for the rest,
    RFC 5321 4.5.3.1.10): the message goes to the first two, the rest wait for the next
    attempt, never bounce; in the end every recipient has exactly one copy."""
    taken: list[str] = []

    def two_per_transaction(address: str) -> str | None:
        if len(taken) >= 2:
            return "452 4.5.3 Too many recipients"
        taken.append(address)
        return None

    def reset(_index: int, _received: Received) -> None:
        taken.clear()  # a new transaction after each DATA
        return None

    relay.set_policy(data_policy=reset, rcpt_policy=two_per_transaction)
    rcpts = [f"r{i}@example.org" for i in range(5)]
    client.enqueue(synthetic(1), recipients=rcpts)

    for _round in range(4):
        work()
        taken.clear()
        client.store.promote_due(now=10**10)

    books = client.store.books()
    assert books.bounced == 0 and books.delivered == 1, books
    got = sorted(r for m in relay.messages for r in m.recipients)
    assert got == rcpts


def test_any_2xx_after_the_final_dot_is_a_delivery(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """A relay that answers the end of DATA with a 2xx other than 250 took the message.
    drain deferred it (only 250 counted), so every later attempt delivered another copy,
    about a hundred over the five days of the message's lifetime."""
    seen: list[Received] = []

    def took_it(_index: int, received: Received) -> str:
        seen.append(received)
        return "251 2.0.0 taken, will forward"

    relay.set_policy(data_policy=took_it)
    client.enqueue(synthetic(1))

    for _attempt in range(3):
        work()
        client.store.promote_due(now=10**10)

    assert len(seen) == 1
    books = client.store.books()
    assert books.delivered == 1 and books.deferred == 0, books


def test_a_reply_that_is_not_smtp_closes_the_session_and_costs_one_message(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """The relay answers the end of the first message with a line that is not SMTP, then a
    250. drain took the junk as the reply (-1), sent RSET on the same session and read the
    stray 250 as its answer: from then on each reply was paired with the wrong command, and
    the next messages were deferred on replies meant for others. Now the session is closed
    at the junk line: that message is deferred, the others go out on a new session."""
    relay.set_policy(data_policy=lambda i, _m: "junk, this is not smtp\r\n250 2.0.0 ok" if i == 0 else None)
    client.enqueue_many([synthetic(i, domain="example.org") for i in range(4)])

    work(breaker_failures=100)

    books = client.store.books()
    assert books.delivered == 3 and books.deferred == 1, books
    got = sorted((m.message_id, m.recipients) for m in relay.messages)
    assert got == [(f"<synthetic-{i}@sender.example.com>", (f"user{i}@example.org",)) for i in (1, 2, 3)]
