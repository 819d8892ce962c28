"""Two chunks in flight on one connection (drain/store/enqueue_wire.py): a chunk sent behind
one that fails stores nothing, so what is reported queued is still the chunks in front of
the failure, in order; and nothing of the ordering is left in Redis afterwards."""

from __future__ import annotations

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
    queued mail the caller is never told of)."""
    monkeypatch.setattr(enqueue, "ENQUEUE_CHUNK", 2)
    rclient.set(keys.message("3"), "in the way")  # ids 1-2, 3-4, 5-6
    stored: list[str] = []

    with pytest.raises(redis.ResponseError, match="already has a key"):
        client.store.enqueue_many(_items(6), stored=stored)

    assert stored == ["1", "2"]
    assert client.store.books().accepted == 2
    assert not rclient.exists(keys.message("5"), keys.message("6"), keys.message("4"))


def test_every_chunk_stores_in_order_and_no_mark_is_left(client: Client, rclient: redis.Redis,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Seven chunks, each behind the mark of the one before: all stored, ids in the input's
    order, and the mark is gone once the call returns."""
    monkeypatch.setattr(enqueue, "ENQUEUE_CHUNK", 3)
    items = _items(20)

    ids = client.store.enqueue_many(items)

    assert ids == [format(n, "x") for n in range(1, 21)]
    assert client.store.books().accepted == 20 == client.store.books().ready
    assert [m.raw for m in client.store.load(ids) if m is not None] == [raw for raw, _e, _w in items]
    assert rclient.keys(keys.enqueue_mark("*")) == []
