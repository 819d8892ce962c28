"""README promises that no other test checked: the status page's literal security headers,
control and bidi characters dropped from it, the limits on recipients and on rule lengths,
the CLI reading at most one byte past the size limit, the intake pause leaving the Python API
accepting, and the backlog lane's every-Nth claim."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.errors import ConfigError, InputError
from drain.flow import ratelimit
from drain.intake import door as intake
from drain.intake.api import Client, Submission
from drain.intake.rules import Rule
from drain.message import envelope_from_headers
from drain.observe.http import StatusServer
from drain.settings import Settings
from drain.store import body, keys
from drain.store.store import Outcome
from drain.worker.dispatch import ensure_tokens
from tests.test_web import fetch


@pytest.fixture
def page(settings: Settings) -> Iterator[Callable[[], StatusServer]]:
    started: list[StatusServer] = []

    def start() -> StatusServer:
        server = StatusServer(settings.redis_url or "", settings, "127.0.0.1", 0, refresh_s=0.1, show_messages=True)
        server.start()
        started.append(server)
        assert server.snapshots.refreshed.wait(10)
        return server

    yield start
    for server in started:
        server.stop()


def test_page_headers_are_the_readmes_literal_values(client: Client, page: Callable[[], StatusServer]) -> None:
    answer = fetch(page().url)
    csp = {d.split()[0]: " ".join(d.split()[1:]) for d in answer.headers["Content-Security-Policy"].split(";")
           if d.strip()}
    # README: `Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:`
    # (plus `nosniff`, `frame-ancestors 'none'`).
    assert csp["default-src"] == "'none'"
    assert csp["style-src"] == "'unsafe-inline'"
    assert csp["img-src"] == "data:"
    assert csp["frame-ancestors"] == "'none'"
    assert not {"script-src", "connect-src"} & set(csp)  # nothing loosens default-src for scripts
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


CONTROL_AND_BIDI = "\x1b\x07\x08\x7f\u202e\u202a\u2066\u2067\u2069\u200f\u061c"


def test_control_and_bidi_characters_are_dropped_from_the_page(
    client: Client, work: Callable[..., bool], page: Callable[[], StatusServer]
) -> None:
    from email.header import Header

    subject = Header(f"pay{CONTROL_AND_BIDI}[31mnow", "utf-8").encode()
    raw = (f"From: Evil\u202e <evil@example.com>\r\nTo: victim@example.com\r\nSubject: {subject}\r\n"
           "Message-ID: <bidi@evil.example>\r\n\r\nhello\x00\r\n").encode()
    client.enqueue(raw, sender="evil@example.com", recipients=["victim@example.com"])
    work()
    assert client.store.books().quarantined == 1
    text = fetch(page().url).text
    assert "pay" in text and "now" in text
    found = sorted({f"U+{ord(ch):04X}" for ch in text if ch in CONTROL_AND_BIDI})
    assert found == [], found


def test_recipients_per_message_are_limited(client: Client) -> None:
    limited = Client(client.redis, client.settings.with_(max_recipients=3))
    rcpts = [f"r{i}@example.org" for i in range(4)]
    with pytest.raises(InputError, match="4 recipients, over the limit of 3"):
        limited.enqueue(synthetic(1), recipients=rcpts)
    assert limited.enqueue(synthetic(2), recipients=rcpts[:3])
    result = limited.enqueue_many([synthetic(3)])
    assert len(result.ids) == 1
    assert client.store.books().accepted == 2
    assert Settings.from_env({"DRAIN_MAX_RECIPIENTS": "7"}).max_recipients == 7
    assert Settings.from_env({}).max_recipients == 1000  # the README's default


def test_rule_pattern_and_field_lengths_are_limited() -> None:
    Rule(id="1", header="Subject", pattern="a" * 200)
    with pytest.raises(ConfigError, match="longer than 200"):
        Rule(id="1", header="Subject", pattern="a" * 201)
    Rule(id="2", sender="s" * 320)
    with pytest.raises(ConfigError, match="longer than 320"):
        Rule(id="2", sender="s" * 321)
    with pytest.raises(ConfigError, match="longer than 320"):
        Rule(id="3", domain="d" * 321)


def test_drain_check_reads_at_most_one_byte_past_the_limit(settings: Settings) -> None:
    """A pipe of 20 MB into `drain check -` with a 2,000-byte limit: the command reads 2,001
    bytes and stops, so the writer can put no more than that plus the pipe's buffer."""
    limit = 2000
    proc = subprocess.Popen([sys.executable, "-m", "drain", "check", "--json", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "DRAIN_MAX_MESSAGE_BYTES": str(limit),
                                 "DRAIN_REDIS_URL": settings.redis_url or ""})
    assert proc.stdin is not None
    written = 0
    chunk = synthetic(1, size=64 * 1024)

    def feed() -> None:
        nonlocal written
        try:
            while written < 20 * 2**20:
                assert proc.stdin is not None
                proc.stdin.write(chunk)
                proc.stdin.flush()
                written += len(chunk)
        except (BrokenPipeError, ValueError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=60)
    writer.join(timeout=60)
    assert proc.returncode == 0, err
    assert b'"size.over-limit"' in out and f"more > {limit}".encode() in out  # read to limit + 1 only
    assert written < 2 * 2**20, f"the writer put {written} bytes: drain check read them all"


def test_intake_pause_leaves_the_python_api_accepting(client: Client) -> None:
    intake.pause(client.redis)
    try:
        msg_id = client.enqueue(synthetic(1))
        assert client.enqueue_many([synthetic(2), synthetic(3)]).ids
    finally:
        intake.resume(client.redis)
    assert body.unpack(client.redis.hget(keys.message(msg_id), "raw") or b"") == synthetic(1)
    assert client.store.books().accepted == 3


def test_every_fourth_claim_serves_the_backlog_lane_first(client: Client) -> None:
    share = client.settings.backlog_share
    assert share == 4  # the README's figure, the default
    store = client.store
    store.enqueue_many(((synthetic(i), envelope_from_headers(synthetic(i)), None) for i in range(20)), lane="backlog")
    store.enqueue_many((synthetic(i), envelope_from_headers(synthetic(i)), None) for i in range(100, 120))
    lanes, claimed = [], []
    for _ in range(12):
        claim = store.claim("test-owner", 1)
        (msg_id,) = claim.ids
        claimed.append(msg_id)
        lanes.append("fresh" if msg_id in claim.fresh else "backlog")
    store.settle("test-owner", [Outcome(i, "requeue") for i in claimed])
    assert lanes == ["fresh", "fresh", "fresh", "backlog"] * 3, lanes


@pytest.mark.parametrize("lane", ["backlog", "fresh"])
def test_parked_mail_keeps_its_order(client: Client, relay: Sink, work: Callable[..., bool],
                                     housekeep: Callable[[], object], lane: str) -> None:
    """README: mail for a paused domain is parked on the domain's list, in order, and moved back
    as the domain opens again; it reaches the relay in the order it was accepted."""
    domain = "kept.example.com"
    ratelimit.pause_domain(client.redis, domain)
    ids = client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@{domain}",)) for i in range(12)],
                              lane=lane).ids
    work(relay_sessions=1)  # one session parks (and later sends) in claim order
    assert relay.accepted == 0
    assert int(client.redis.hget(keys.BOOKS, "parked") or 0) == 12
    assert [i.decode() for i in client.redis.lrange(keys.parked(domain), 0, -1)] == ids
    ratelimit.resume_domain(client.redis, domain)
    housekeep()
    ensure_tokens(client.redis, client.settings)
    work(batch_size=5, relay_sessions=1)
    assert [m.message_id for m in relay.messages] == [f"<synthetic-{i}@sender.example.com>" for i in range(12)]


def test_parked_fresh_mail_goes_ahead_of_parked_backlog_mail_in_order(
        client: Client, relay: Sink, work: Callable[..., bool], housekeep: Callable[[], object]) -> None:
    """README: parked fresh mail goes ahead of parked backlog mail of its domain (and keeps its
    order), also when it is parked after the backlog mail and over several batches."""
    domain = "mixed.example.com"
    ratelimit.pause_domain(client.redis, domain)

    def submit(first: int, lane: str) -> list[str]:
        return client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@{domain}",))
                                    for i in range(first, first + 6)], lane=lane).ids

    backlog = submit(0, "backlog")
    work(relay_sessions=1)  # one session parks (and later sends) in claim order
    fresh = submit(100, "fresh")
    work(batch_size=4, relay_sessions=1)
    fresh += submit(200, "fresh")
    work(batch_size=4, relay_sessions=1)
    assert relay.accepted == 0
    assert [i.decode() for i in client.redis.lrange(keys.parked(domain), 0, -1)] == fresh + backlog
    ratelimit.resume_domain(client.redis, domain)
    housekeep()
    ensure_tokens(client.redis, client.settings)
    work(batch_size=5, relay_sessions=1)
    order = [*range(100, 106), *range(200, 206), *range(6)]
    assert [m.message_id for m in relay.messages] == [f"<synthetic-{i}@sender.example.com>" for i in order]
