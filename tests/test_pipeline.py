"""Enqueue to delivery, end to end, through a real Redis, RQ worker and SMTP relay."""

from __future__ import annotations

import json
from collections.abc import Callable

from drain.demo.seeding import synthetic, with_message_id
from drain.demo.sink import Sink
from drain.intake.api import Client, Submission
from drain.store import body, keys
from tests.conftest import seed


def test_enqueue_to_delivery(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    raws = [synthetic(i) for i in range(45)]
    accepted = client.enqueue_many(raws)
    assert len(accepted.ids) == 45 and not accepted.rejected
    assert client.store.books().ready == 45

    work()

    books = client.store.books()
    assert books.delivered == 45 and books.queued == 0
    got = sorted(m.message_id for m in relay.messages)
    assert got == sorted(f"<synthetic-{i}@sender.example.com>" for i in range(45))
    # The relay received the bytes with CRLF line endings and the envelope from the headers.
    first = next(m for m in relay.messages if m.message_id == "<synthetic-0@sender.example.com>")
    assert first.sender == "billing@sender.example.com"
    assert first.recipients == ("user0@example.com",)
    assert b"Subject: Your statement no. 0\r\n" in first.data
    # After delivery only counters remain: no per-message data.
    assert list(client.redis.scan_iter(match=keys.message("*"))) == []


def test_single_enqueue_with_explicit_envelope(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    msg_id = client.enqueue(synthetic(1), sender="ops@example.com", recipients=["a@example.org", "b@example.net"])
    assert body.unpack(client.redis.hget(keys.message(msg_id), "raw") or b"") == synthetic(1)
    work()
    # One delivery per destination domain, each with the same bytes.
    org, net = relay.messages
    assert org.sender == net.sender == "ops@example.com"
    assert (org.recipients, net.recipients) == (("a@example.org",), ("b@example.net",))
    assert org.data == net.data


def test_malformed_mail_is_quarantined_and_good_mail_behind_it_flows(
    client: Client, relay: Sink, work: Callable[..., bool]
) -> None:
    bad = seed("bad")
    good = seed("good")
    # The bad ones go first, so every good message waits behind malformed mail.
    client.enqueue_many([raw for _name, raw in bad])
    client.enqueue_many([with_message_id(raw, f"<good-{i}@t>") for i, (_n, raw) in enumerate(good)])

    work()

    books = client.store.books()
    assert books.quarantined == len(bad)
    assert books.delivered == len(good)
    # Mail to several domains goes once per domain: every recipient got each message once.
    assert sorted(set(m.message_id for m in relay.messages)) == sorted(f"<good-{i}@t>" for i in range(len(good)))
    pairs = [(m.message_id, r) for m in relay.messages for r in m.recipients]
    assert len(pairs) == len(set(pairs))
    # Each malformed seed is quarantined with the reason its file is named after.
    expected = {name.removesuffix(".eml").replace("_", ".", 1) for name, _raw in bad}
    found: set[str] = set()
    for msg_id in client.redis.zrange(keys.QUARANTINE, 0, -1):
        findings = json.loads(client.redis.hget(keys.message(msg_id.decode()), "why") or b"[]")
        found.update(f["code"] for f in findings)
    assert expected <= found


def test_permanent_failure_bounces_with_the_reply(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    relay.set_policy(rcpt_policy=lambda rcpt: "550 5.1.1 no such user" if rcpt.startswith("gone") else None)
    client.enqueue(synthetic(1), recipients=["gone@example.com"])
    client.enqueue(synthetic(2), recipients=["here@example.com"])
    work()
    books = client.store.books()
    assert (books.bounced, books.delivered) == (1, 1)
    (entry,) = client.redis.xrange(keys.BOUNCES)
    assert b"550" in entry[1][b"reply"] and b"gone@example.com" in entry[1][b"env"]


def test_transient_failure_defers_then_delivers(
    client: Client, relay: Sink, work: Callable[..., bool]
) -> None:
    relay.set_policy(data_policy=lambda i, m: "451 4.3.0 try again later")
    ids = client.enqueue_many([synthetic(i) for i in range(3)]).ids
    work()
    books = client.store.books()
    assert books.deferred == 3 and books.delivered == 0
    due = dict(client.redis.zrange(keys.DEFERRED, 0, -1, withscores=True))
    accepted_at = float(client.redis.hget(keys.message(ids[0]), "t") or 0)
    # First retry about five minutes out (jittered), never immediately (the tests' settings
    # have no quick retry; tests/test_retry.py has it).
    assert all(accepted_at + 250 < score < accepted_at + 400 for score in due.values())
    assert client.redis.hget(keys.message(ids[0]), "n") == b"1"

    relay.set_policy()
    client.store.promote_due(now=max(due.values()) + 1)  # time is injected, nothing sleeps
    work()
    assert client.store.books().delivered == 3


def test_pause_stops_delivery_but_not_accepting(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    from drain.flow import ratelimit

    ratelimit.pause(client.redis)
    client.enqueue_many([synthetic(i) for i in range(5)])
    work()
    assert client.store.books().ready == 5 and relay.accepted == 0
    ratelimit.resume(client.redis)
    client.enqueue(synthetic(6))
    work()
    assert client.store.books().delivered == 6


def test_refusals_at_the_door_are_reported_not_queued(client: Client) -> None:
    result = client.enqueue_many([b"", synthetic(1), Submission(b"   \n")])
    assert len(result.ids) == 1
    assert [i for i, _why in result.rejected] == [0, 2]
    assert client.store.books().accepted == 1


def _header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def _with_bcc(number: int, bcc: bytes) -> bytes:
    return (b"From: Billing <billing@sender.example.com>\n"
            b"To: Open <open@example.com>\n" + bcc +
            b"Subject: copies\n"
            b"Date: Mon, 23 Nov 2026 10:00:00 +0000\n"
            b"Message-ID: <hc-%d@sender.example.com>\n\n"
            b"Body that mentions\nBcc: this line stays, it is body text.\n" % number)


def test_bcc_recipients_get_the_mail_but_no_copy_shows_the_bcc(client: Client, relay: Sink,
                                                               work: Callable[..., bool]) -> None:
    folded = _with_bcc(1, b"Bcc: Hidden One <hidden1@example.org>,\n  hidden2@example.net\n")
    lower = _with_bcc(2, b"bcc: lower@example.org\n")
    ids = client.enqueue_many([folded, lower]).ids
    relay.set_policy(data_policy=lambda _i, _m: "451 4.3.0 try again later")
    work()
    # Deferred: the stored originals keep every header (the evidence an operator sees).
    assert [body.unpack(client.redis.hget(keys.message(i), "raw") or b"") for i in ids] == [folded, lower]

    relay.set_policy()
    client.store.promote_due(now=10**10)
    work()
    # One copy per destination domain, none of them showing the Bcc.
    got: dict[str, set[str]] = {}
    for m in relay.messages:
        got.setdefault(m.message_id, set()).update(m.recipients)
    assert got["<hc-1@sender.example.com>"] == {"open@example.com", "hidden1@example.org", "hidden2@example.net"}
    assert got["<hc-2@sender.example.com>"] == {"open@example.com", "lower@example.org"}
    for received in relay.messages:
        block = _header_block(received.data)
        assert b"bcc:" not in block.lower() and b"hidden" not in block and b"lower@" not in block
        assert b"To: Open <open@example.com>\r\nSubject: copies\r\n" in block
        assert received.data.endswith(b"Bcc: this line stays, it is body text.\r\n")
