"""Internationalized mail (RFC 6531/6532): accepted with SMTPUTF8 at the ingress, it keeps that
in its envelope, passes validation with raw UTF-8 headers and goes out with SMTPUTF8; without
SMTPUTF8 it is quarantined; a relay that stops offering SMTPUTF8 defers it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from aiosmtpd.controller import Controller

from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.intake.smtpd import Ingress
from drain.message import Envelope
from drain.observe.deferred import records
from drain.store import keys
from tests.test_ingress import BOTH, StartIngress, connect


@pytest.fixture
def ingress(client: Client) -> Iterator[StartIngress]:
    """drain's SMTP ingress on a free port, offering SMTPUTF8 (as when the relay offers it)."""
    started: list[Ingress] = []

    def start() -> Ingress:
        started.append(Ingress(client, "127.0.0.1", 0, features=BOTH, recheck_s=0.0, hostname="drain.test").start())
        return started[-1]

    yield start
    for server in started:
        server.stop()

I18N = ("From: Jörg <jörg@bücher.example.com>\r\nTo: Zoë <zoë@example.org>\r\nSubject: Grüße aus Köln\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <i18n-1@bücher.example.com>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHallo!\r\n").encode()


def _submit(ingress: StartIngress, smtputf8: bool, raw: bytes = I18N) -> str:
    server = ingress()
    with connect(server) as smtp:
        smtp.ehlo()
        options = ["SMTPUTF8"] if smtputf8 else []
        if not smtputf8:
            smtp.command_encoding = "utf-8"
        code, reply = smtp.mail("joerg@example.com", options)
        assert code == 250, reply
        assert smtp.rcpt("zoe@example.org")[0] == 250
        code, reply = smtp.data(raw)
        assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]


def test_smtputf8_mail_is_delivered_with_smtputf8(client: Client, relay: Sink, ingress: StartIngress,
                                                  work: Callable[..., bool]) -> None:
    seen: list[bool] = []

    class Recording:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            seen.append(bool(getattr(envelope, "smtp_utf8", False)))
            return await relay.handler.handle_DATA(server, session, envelope)

    msg_id = _submit(ingress, smtputf8=True)
    assert Envelope.from_json(client.redis.hget(keys.message(msg_id), "env") or b"").smtputf8

    sink = Sink(keep=True)
    sink.controller = Controller(Recording(), hostname="127.0.0.1", port=sink.port, enable_SMTPUTF8=True,
                                 server_hostname="sink.drain.test", ready_timeout=10)
    with sink:
        work(relay=sink.url)
    books = client.store.books()
    assert books.delivered == 1 and books.quarantined == 0, books
    (received,) = relay.messages
    assert "Subject: Grüße aus Köln".encode() in received.data
    assert seen == [True]  # MAIL FROM carried SMTPUTF8


def test_the_same_mail_without_smtputf8_is_quarantined(client: Client, relay: Sink, ingress: StartIngress,
                                                       work: Callable[..., bool]) -> None:
    msg_id = _submit(ingress, smtputf8=False)
    assert not Envelope.from_json(client.redis.hget(keys.message(msg_id), "env") or b"").smtputf8
    work()
    assert client.store.books().quarantined == 1 and relay.accepted == 0
    why = json.loads(client.redis.hget(keys.message(msg_id), "why") or b"[]")
    assert [f["code"] for f in why] == ["header.non-ascii-unencoded"]


def test_smtputf8_mail_still_needs_utf8_headers(client: Client, relay: Sink, ingress: StartIngress,
                                                work: Callable[..., bool]) -> None:
    latin1 = I18N.replace("Grüße aus Köln".encode(), "Grüße aus Köln".encode("latin-1"))
    msg_id = _submit(ingress, smtputf8=True, raw=latin1)
    work()
    assert client.store.books().quarantined == 1
    why = json.loads(client.redis.hget(keys.message(msg_id), "why") or b"[]")
    assert [f["code"] for f in why] == ["header.non-ascii-unencoded"]


def test_relay_that_stops_offering_smtputf8_defers(client: Client, ingress: StartIngress,
                                                   work: Callable[..., bool]) -> None:
    _submit(ingress, smtputf8=True)  # taken while the relay offered SMTPUTF8
    plain = Sink(keep=True)
    plain.controller = Controller(plain.handler, hostname="127.0.0.1", port=plain.port, enable_SMTPUTF8=False,
                                  server_hostname="sink.drain.test", ready_timeout=10)
    with plain:
        work(relay=plain.url, breaker_failures=100)
        assert plain.accepted == 0
    books = client.store.books()
    assert (books.deferred, books.bounced, books.quarantined) == (1, 0, 0), books
    (record,) = records(client.store)
    assert "SMTPUTF8" in record.last_reply
