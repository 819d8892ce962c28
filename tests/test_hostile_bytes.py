"""Hostile message bytes through the whole path (enqueue, worker, a real aiosmtpd relay):
each gives a verdict, and what reaches the relay is exactly right."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.message import envelope_from_headers
from drain.validate import check

HEAD = (b"From: a@example.com\nTo: b@example.org\nDate: Mon, 23 Nov 2026 10:00:00 +0000\n"
        b"Message-ID: <h1@example.com>\nSubject: test\n\n")


@pytest.mark.parametrize("body", [
    b"one\r.\rMAIL FROM:<x@example.net>\rRCPT TO:<victim@example.org>\rDATA\r\rsmuggled\r.\r",  # CR . CR
    b"a lone CR\rin an LF-only file\n",
], ids=["smuggle", "lone-cr"])
def test_a_lone_cr_in_an_lf_only_message_is_quarantined_not_sent(
        body: bytes, client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """LF-only files are normal (each LF goes out as CRLF), but a lone CR is not a line end
    in SMTP (RFC 5321 2.3.8) and some servers take CR . CR as the end of DATA (SMTP
    smuggling). Only CRLF messages were checked for it: an LF-only one went out as it was."""
    raw = HEAD + body
    assert check(raw, envelope_from_headers(raw)).reasons == ["body.bare-cr-lf"]
    client.enqueue(raw)

    work()

    assert relay.messages == []
    books = client.store.books()
    assert books.quarantined == 1 and books.delivered == 0, books


def test_body_lines_over_998_octets_are_quarantined_and_do_not_open_the_relay_breaker(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """RFC 5322 2.1.1: a line is at most 998 octets. A relay that enforces it answers 500 at
    the end of DATA, which drain takes as the session's trouble: the message was deferred
    again and again, and a handful of them in a row opened the relay's breaker and held
    everyone's mail. Now the workers quarantine it before it is sent."""
    long_ones = [HEAD.replace(b"<h1@", b"<long%d@" % i) + b"x" * (999 + 2000 * i) + b"\n" for i in range(4)]
    good = [HEAD.replace(b"<h1@", b"<good%d@" % i) + b"y" * 998 + b"\n" for i in range(6)]
    client.enqueue_many(long_ones + good)

    work(breaker_failures=3)

    books = client.store.books()
    assert books.quarantined == 4 and books.delivered == 6, books
    assert sorted(m.message_id for m in relay.messages) == sorted(f"<good{i}@example.com>" for i in range(6))
    reasons = check(long_ones[0], envelope_from_headers(long_ones[0])).reasons
    assert reasons == ["body.line-too-long"]
