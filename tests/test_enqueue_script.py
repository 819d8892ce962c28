"""The enqueue script (lua/enqueue.lua) and its producer side (drain/store/enqueue.py): all
or nothing per chunk, the events' lookup records the producer hashes, and what is reported
queued when the input fails while a chunk is on its way."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.message import Envelope, envelope_from_headers
from drain.store import enqueue, keys, lookup
from drain.store.enqueue import Item


def _items(count: int, first: int = 0) -> list[Item]:
    return [(raw, envelope_from_headers(raw), None) for raw in (synthetic(first + i) for i in range(count))]


def test_a_wrong_typed_tenant_list_refuses_the_chunk_before_any_write(client: Client, rclient: redis.Redis) -> None:
    """The script checks the keys it moves mail through before its first write: a Lua
    script that fails half way keeps what it wrote (message hashes on no list)."""
    rclient.set(keys.lane("fresh", "sender.example.com"), "not a list")

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.store.enqueue_many(_items(3))

    assert client.store.books().accepted == 0
    assert rclient.keys(keys.message("*")) == [] and rclient.xlen(keys.EVENTS) == 0


def test_a_new_id_that_already_has_a_key_refuses_the_chunk(client: Client, rclient: redis.Redis) -> None:
    """With drain:seq set back, new ids are those of queued mail: writing over them would
    mix two messages in one hash. The chunk is refused whole; the mail there is untouched."""
    first = client.store.enqueue_many(_items(3))
    before = rclient.hgetall(keys.message(first[0]))
    rclient.set(keys.SEQ, 0)

    with pytest.raises(redis.ResponseError, match="already has a key"):
        client.store.enqueue_many(_items(2, first=10))

    assert rclient.hgetall(keys.message(first[0])) == before
    assert client.store.books().accepted == 3 and client.store.books().ready == 3


def test_each_lookup_value_finds_its_event(client: Client, rclient: redis.Redis) -> None:
    """The producer hashes the lookup values (events.index_record) and the script appends
    the records: each value finds its message's received event, and the id of a message a
    rule holds finds its quarantined event too."""
    raw = (b"From: Ann <ann@sender.example>\nTo: bob@one.example, Cy <cy@Two.example>\n"
           b"Message-ID: <m1@sender.example>\nSubject: hi\n\nbody\n")
    held = synthetic(7)
    ids = client.store.enqueue_many([(raw, envelope_from_headers(raw), None),
                                     (held, envelope_from_headers(held), '[{"code":"rule.match","detail":"x"}]')])
    values = ["s:ann@sender.example", "r:bob@one.example", "r:cy@two.example", "d:two.example",
              "m:<m1@sender.example>", f"i:{ids[0]}"]
    now = time.time()
    found = lookup.where(rclient, [*values, f"i:{ids[1]}"], lookup.days(now - 86400, now + 86400))

    for value in values:  # an entry holds both received events: the reader checks the id
        docs = lookup.read(rclient, found[value])
        assert [(d["event"], d["id"]) for d in docs if d["id"] == ids[0]] == [("received", ids[0])], value
    held_docs = [d for d in lookup.read(rclient, found[f"i:{ids[1]}"]) if d["id"] == ids[1]]
    assert [(d["event"], d["id"]) for d in held_docs] == [("received", ids[1]), ("quarantined", ids[1])]
    assert held_docs[1]["codes"] == ["rule.match"]


def test_input_that_fails_while_a_chunk_is_on_its_way_reports_that_chunk(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next chunk is read while Redis stores the one before; when reading it fails, the
    chunk already sent is stored all the same and must be reported queued (it is counted)."""
    monkeypatch.setattr(enqueue, "ENQUEUE_CHUNK", 2)

    def failing() -> Iterator[Item]:
        yield from _items(5)
        raise RuntimeError("the producer's input broke")

    stored: list[str] = []
    with pytest.raises(RuntimeError):
        client.store.enqueue_many(failing(), stored=stored)

    books = client.store.books()
    assert books.accepted == 4 and len(stored) == 4  # two chunks of 2; the fifth never went
    assert client.store.load(stored)[3] is not None


def test_a_guard_that_closes_between_chunks_reports_the_chunks_before(client: Client) -> None:
    """before_chunk (the memory guard) runs before each chunk is sent: what it stops was
    never written, what went before is reported."""
    calls: list[int] = []

    def guard() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("full")

    stored: list[str] = []
    with pytest.raises(RuntimeError):
        client.store.enqueue_many(_items(2 * enqueue.ENQUEUE_CHUNK + 5), stored=stored, before_chunk=guard)

    assert len(stored) == 2 * enqueue.ENQUEUE_CHUNK == client.store.books().accepted


def test_a_chunk_keeps_its_order_and_tenants(client: Client, rclient: redis.Redis) -> None:
    """Ids come back in the input's order, each message on its own tenant's list."""
    items = [(synthetic(i), Envelope("a@x.example", (f"u{i}@y.example",)), None) for i in range(5)]
    ids = client.store.enqueue_many(items, tenants=["t1", "t2", "t1", "", "t2"])

    assert ids == sorted(ids, key=lambda i: int(i, 16))
    assert [i.decode() for i in rclient.lrange(keys.lane("fresh", "t1"), 0, -1)] == [ids[0], ids[2]]
    assert [i.decode() for i in rclient.lrange(keys.lane("fresh", "t2"), 0, -1)] == [ids[1], ids[4]]
    assert [i.decode() for i in rclient.lrange(keys.lane("fresh", "x.example"), 0, -1)] == [ids[3]]
    assert rclient.hget(keys.message(ids[1]), "tn") == b"t2"
