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
