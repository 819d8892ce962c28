"""A message whose stored fields are damaged costs only itself, and what the operator is shown
of it is the truth: damage named, never a made-up sender or recipients."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.observe import backlog, model, status
from drain.store import events, keys, lookup
from drain.store.record import CORRUPT
from drain.trace import where
from tests.test_cli import drain
from tests.test_metrics import scrape


def _mail(n: int) -> bytes:
    return (f"From: a@src.example\r\nTo: u{n}@dest.example\r\nSubject: {n}\r\nDate: Mon, 30 Nov 2026 14:00:00 +0000\r\n"
            f"Message-ID: <{n}@src.example>\r\n\r\nhello\r\n").encode()


@pytest.mark.parametrize("env", [
    {"from": "a@src.example", "to": ["u1@dest.example"]},  # an object, not [sender, [recipients]]
    ["a@src.example", "u1@dest.example"],  # recipients a string: its letters were the recipients
    [5, [1, {"a": 2}]],  # numbers and objects made into addresses
])
def test_an_envelope_of_the_wrong_shape_is_damage_not_addresses(client: Client, relay: Sink,
                                                                 work: Callable[..., bool], env: object) -> None:
    """Envelope.from_json unpacked whatever JSON it found: an object gave sender "from" and
    recipients "t", "o"; a string of recipients gave letters. `drain show` showed those as the
    envelope, with no word of damage, and the worker quarantined the message as the producer's
    fault (address.invalid-recipient) instead of store.corrupt. Mutants caught: from_json without
    its shape check; where.show without "damaged"."""
    ids = [client.enqueue(_mail(n)) for n in range(3)]
    client.redis.hset(keys.message(ids[1]), "env", json.dumps(env))
    retention = client.store.settings.trace_retention_s
    doc, _raw = where.show(client.redis, ids[1], retention)  # as the operator sees it, queued
    assert doc["sender"] == "" and doc["recipients"] == []  # not made up from the damage
    assert any("env" in d for d in doc["damaged"])  # and the damage is said
    shown = drain(client.store.settings, "show", ids[1])
    assert shown.returncode == 0 and b"damaged: field env" in shown.stdout and b"<from>" not in shown.stdout
    work()
    assert relay.accepted == 2
    assert all(r.recipients[0].endswith("@dest.example") for r in relay.messages)
    books = client.store.books()
    assert books.delivered == 2 and books.quarantined == 1
    doc, _raw = where.show(client.redis, ids[1], retention)
    assert doc["state"] == "quarantined" and doc["reasons"] == [CORRUPT]


def _add_indexed_event(client: Client, msg_id: str, kind: str, data: list[object]) -> None:
    """An event entry as a damaged (or hand-edited) stream may hold, indexed under the message's
    id the way lib.event indexes one, so that trace and show find it."""
    sid = client.redis.xadd(keys.EVENTS, {"e": kind, "i": msg_id, "d": json.dumps(data)}).decode()
    ms, seq = (int(part) for part in sid.split("-"))
    tag, bucket = lookup._hashed(events.BY_ID + msg_id)
    day, in_day = divmod(ms, 86_400_000)
    client.redis.append(keys.events_index(day, bucket), tag + (in_day * 8192 + seq).to_bytes(5, "big"))


def test_damaged_events_cost_their_fields_not_the_log_the_trace_or_show(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """`drain log` stopped with a traceback (OverflowError) at a deferred event whose next_attempt
    no date can hold, and printed nothing after it; `drain show` of a delivered message with a
    delivered event whose attempt was an object died in int(). Mutants caught: decode_entry
    without the field type check (show, trace); stamp() without its guard (log)."""
    first = client.enqueue(_mail(0))
    work()
    bad: list[tuple[str, list[object]]] = [
        ("f", ["451 later", 2, 1e308]),  # a time no date holds: shown as a number
        ("f", [{"a": 1}, "two", float("nan")]),
        ("d", [["250"], {"n": 1}, "slow"]),
        ("b", ["550 no", 5, 6, {"x": 1}]),  # recipients a number
    ]
    for kind, data in bad:
        _add_indexed_event(client, first, kind, data)
    second = client.enqueue(_mail(1))
    work()
    settings = client.store.settings
    log = drain(settings, "log")
    assert log.returncode == 0 and b"Traceback" not in log.stderr, log.stderr[-400:]
    assert f" {second} ".encode() in log.stdout  # the events after the damaged ones are there
    assert b"next_attempt=1e+308" in log.stdout
    for args in (["show", first], ["show", first, "--json"], ["trace", "--id", first],
                 ["trace", "--id", first, "--json"]):
        run = drain(settings, *args)
        assert run.returncode == 0 and b"Traceback" not in run.stderr, (args, run.stderr[-400:])
    doc = json.loads(drain(settings, "show", first, "--json").stdout)
    assert doc["state"] == "delivered" and doc["recipients"] == ["u0@dest.example"]
    assert doc["attempts"] in (0, 1, 2)


def test_damaged_counters_and_samples_cost_themselves_not_the_status(client: Client) -> None:
    """A backlog-shape count that was not a number made `drain status` and `drain backlog` die in
    int() (a traceback), a counter "1e400" or a latency "abc" made the status page's read fail,
    and one unreadable books sample stopped the page's chart. Mutants caught: shape() without its
    ValueError branch; model._ints/latency without _numbers; history() without _samples."""
    for n in range(4):
        client.enqueue(_mail(n))
    client.redis.hset(keys.SHAPE, mapping={"dest.example|abc": "5", b"\xff|1": "x", "zz": "7"})
    client.redis.hset(keys.BOOKS, "bounced", "1e400")
    client.redis.hset(keys.LATENCY, mapping={"sum": "abc", "1": "nan"})
    good = {"t": time.time(), "queued": 4, "ready": 4, "deferred": 0, "delivered": 0, "quarantined": 0,
            "bounced": 0}
    client.redis.lpush(keys.HISTORY, json.dumps(good), "{not json", json.dumps({"t": "x"}), "[1]")
    assert backlog.shape(client.store).total == 4
    assert status.read(client.store).books.ready == 4
    assert backlog.history(client.store) == [good]
    figures = model.read(client.store)  # what the status page and /metrics read
    assert "bounced" not in figures.counters and "sum" not in figures.latency
    assert scrape(client.store)[("drain_queue_depth", frozenset({("state", "ready")}))] == 4
    for args in (["status", "--json"], ["backlog", "--json"]):
        run = drain(client.store.settings, *args)
        assert run.returncode == 0 and b"Traceback" not in run.stderr, run.stderr[-400:]
    client.redis.hdel(keys.BOOKS, "bounced")  # the books balance again for the fixture's check


@pytest.mark.parametrize("key", [keys.SHAPE, keys.DEFERRED, keys.LATENCY, keys.FINDINGS, keys.HISTORY,
                                 keys.QUARANTINE, keys.HELD_RATE])
def test_a_key_of_the_wrong_type_costs_its_figure_not_the_page(client: Client, key: str) -> None:
    """One key of the wrong type (a string where a hash, list or sorted set belongs: damage, or
    a careless SET) made the status page's whole read fail: the page said "Redis unreachable"
    and froze; for drain:shape and drain:deferred `drain backlog` and `drain status` stopped with
    "drain: error: Redis: WRONGTYPE". Mutants caught: each read without its ResponseError branch
    (shape, _last_due, model.read, history, Reader._quarantine, status.read's deferred split)."""
    for n in range(4):
        client.enqueue(_mail(n))
    client.redis.delete(key)
    client.redis.set(key, "oops")
    try:
        st = status.read(client.store)
        assert st.books.ready == 4
        if key == keys.SHAPE:  # no shape: no ETA, and why
            assert st.eta_s is None and "shape unreadable" in st.held_by["*"]
        assert backlog.shape(client.store) is not None
        assert model.Reader(client.store, show_messages=True).read().figures.status.books.ready == 4
        for args in (["status", "--json"], ["backlog", "--json"]):
            run = drain(client.store.settings, *args)
            assert run.returncode == 0, (args, run.stderr[-400:])
    finally:
        client.redis.delete(key)
