"""Two chunks in flight on one connection (drain/store/enqueue_wire.py): a chunk sent behind
one that fails stores nothing, so what is reported queued is still the chunks in front of
the failure, in order; the ordering's count expires."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.message import envelope_from_headers
from drain.store import enqueue, keys
from drain.store.enqueue import Item


def _items(count: int) -> list[Item]:
    return [(raw, envelope_from_headers(raw), None) for raw in (synthetic(i) for i in range(count))]


def test_a_chunk_sent_behind_a_failed_one_stores_nothing(client: Client, rclient: redis.Redis,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 2: the second finds a key at one of its new ids and is refused; the third,
    already on the wire when that reply is read, must not store either (it would leave
    queued mail the caller is never told of). Mutant caught: the script's check of the
    count disabled (the third chunk stored)."""
    monkeypatch.setattr(enqueue, "ENQUEUE_CHUNK", 2)
    # Each chunk sent before the reply of the one ahead is read, however fast Redis answers.
    monkeypatch.setattr(redis.connection.AbstractConnection, "can_read", lambda self, timeout=0: False)
    rclient.set(keys.message("3"), "in the way")  # ids 1-2, 3-4, 5-6
    stored: list[str] = []

    with pytest.raises(redis.ResponseError, match="already has a key"):
        client.store.enqueue_many(_items(6), stored=stored)

    assert stored == ["1", "2"]
    assert client.store.books().accepted == 2
    assert not rclient.exists(keys.message("5"), keys.message("6"), keys.message("4"))


def test_every_chunk_stores_in_order_and_the_count_expires(client: Client, rclient: redis.Redis,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Seven chunks, each behind the ones before: all stored, ids in the input's order (new
    ids reserved ahead through the wire, none skipped), and the call's count of stored
    chunks is left to expire. Mutants caught: a reservation's first id off by one (ids
    repeat: refused, or out of order); the count kept for good (no EXPIREAT)."""
    monkeypatch.setattr(enqueue, "ENQUEUE_CHUNK", 3)
    items = _items(20)

    ids = client.store.enqueue_many(items)

    assert ids == [format(n, "x") for n in range(1, 21)]
    assert client.store.books().accepted == 20 == client.store.books().ready
    assert [m.raw for m in client.store.load(ids) if m is not None] == [raw for raw, _e, _w in items]
    (mark,) = rclient.keys(keys.enqueue_mark("*"))
    assert rclient.get(mark) == b"7" and 0 < rclient.ttl(mark) <= 600


def test_a_chunk_sent_after_the_one_before_answered_is_not_held_to_the_count(
        client: Client, rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow input: the count of the call's chunks has expired by the time the next chunk
    comes, but the chunk before has answered, so nothing needs ordering and the chunk
    stores. Mutant caught: every chunk after the first checked against the count (refused)."""
    monkeypatch.setattr(enqueue, "ENQUEUE_CHUNK", 2)
    items = _items(6)

    def slow() -> Iterator[Item]:
        yield from items[:5]  # chunks 1 and 2 sent; the fifth item waits in chunk 3
        deadline = time.monotonic() + 10
        while client.store.books().accepted < 4:
            assert time.monotonic() < deadline, "the first two chunks were not stored"
            time.sleep(0.01)
        for mark in rclient.keys(keys.enqueue_mark("*")):
            rclient.delete(mark)  # as if it had expired
        yield items[5]

    ids = client.store.enqueue_many(slow())

    assert len(ids) == 6 == client.store.books().accepted
