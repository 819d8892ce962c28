"""The settle scripts write per call what they can: the in-flight hash read once, the books,
the backlog shape and the latency histogram written once per field, the delivered messages
dropped in one DEL. A worker's deliveries (their event data made by the worker) go through
deliver.lua, anything else through settle.lua: both must leave the same books, figures and
events. And each script carries only the prelude functions it reaches."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.store import events, keys, scripts
from drain.store.store import Outcome, Store

REPLY = "250 2.0.0 Ok: queued as ABC"


def _delivered(store: Store, msg_id: str, worker_made: bool) -> Outcome:
    data = events.delivered_data(REPLY, 1, 0.25) if worker_made else ""
    return Outcome(msg_id, "delivered", envelope=REPLY, event=data)


def _figures(rclient: redis.Redis) -> tuple[dict[bytes, bytes], dict[bytes, bytes], dict[bytes, bytes]]:
    return rclient.hgetall(keys.SHAPE), rclient.hgetall(keys.TENANT_SHAPE), rclient.hgetall(keys.LATENCY)


@pytest.mark.parametrize("worker_made", [True, False], ids=["deliver.lua", "settle.lua"])
def test_deliveries_leave_books_figures_and_events_as_one_by_one(
        client: Client, store: Store, rclient: redis.Redis, worker_made: bool) -> None:
    """Mutants caught: deliveries_done not taking the shape down (a field left at a count,
    never deleted); the latency bucket counted once per call instead of per message; the DEL
    of the delivered messages left out; the books counted once per call."""
    ids = client.enqueue_many([synthetic(i) for i in range(7)]).ids
    assert store.claim("w1", 7).ids == ids
    for start in (0, 3, 6):  # calls of 3, 3 and 1, as a worker settles
        assert store.settle("w1", [_delivered(store, i, worker_made) for i in ids[start:start + 3]]) == \
            (len(ids[start:start + 3]), 0)

    books = store.books()
    assert (books.delivered, books.in_flight, books.ready) == (7, 0, 0) and books.balanced, books
    shape, tenants, latency = _figures(rclient)
    assert shape == {} and tenants == {}, (shape, tenants)  # every field down to 0 is gone
    assert sum(int(v) for k, v in latency.items() if k != b"sum") == 7, latency
    assert not any(rclient.exists(keys.message(i)) for i in ids)
    found = [d for d in events.decode_all(rclient.xrange(keys.EVENTS)) if d["event"] == "delivered"]
    assert sorted(d["id"] for d in found) == sorted(ids)
    assert all(d["reply"] == REPLY and d["attempt"] == 1 for d in found), found


@pytest.mark.parametrize("worker_made", [True, False], ids=["deliver.lua", "settle.lua"])
def test_an_id_given_twice_in_one_call_is_settled_once(
        client: Client, store: Store, worker_made: bool) -> None:
    """The holders are read once for the whole call: an id given twice would be taken as held
    both times. Mutant caught: lib.held without its check of ids already seen (delivered 2)."""
    ids = client.enqueue_many([synthetic(1), synthetic(2)]).ids
    store.claim("w1", 2)
    twice = _delivered(store, ids[0], worker_made)
    assert store.settle("w1", [twice, twice, _delivered(store, ids[1], worker_made)]) == (2, 1)
    books = store.books()
    assert (books.delivered, books.in_flight) == (2, 0) and books.balanced, books


def test_deliveries_to_wrong_typed_books_move_nothing(client: Client, store: Store, rclient: redis.Redis) -> None:
    """deliver.lua checks no types: its first write counts the deliveries in the books, so
    books of the wrong type fail the call before anything moved. Mutant caught: the in-flight
    entries dropped before the books are counted (the messages then held by no one)."""
    ids = client.enqueue_many([synthetic(i) for i in range(3)]).ids
    store.claim("w1", 3)
    saved = rclient.hgetall(keys.BOOKS)
    rclient.delete(keys.BOOKS)
    rclient.set(keys.BOOKS, "not what drain writes here")
    with pytest.raises(redis.ResponseError):
        store.settle("w1", [_delivered(store, i, True) for i in ids])
    assert {o: sorted(h) for o, h in store.held().items()} == {"w1": sorted(ids)}
    assert all(rclient.exists(keys.message(i)) for i in ids)
    rclient.delete(keys.BOOKS)
    rclient.hset(keys.BOOKS, mapping=saved)
    assert store.settle("w1", [_delivered(store, i, True) for i in ids]) == (3, 0)


def test_each_script_defines_every_prelude_function_it_calls(rclient: redis.Redis) -> None:
    """Scripts carry only the prelude functions they reach (scripts.used_prelude). Mutant
    caught: the walk not following the functions a kept function calls (deliver.lua then
    calls lib.event without lib.flush)."""
    folder = files("drain.store") / "lua"
    names = sorted(p.name.removesuffix(".lua") for p in folder.iterdir()
                   if p.name.endswith(".lua") and p.name != "_lib.lua")
    assert "deliver" in names and "settle" in names
    for name in names:
        text = scripts.source(name)
        code = re.sub(r"^\s*--.*$", "", text, flags=re.MULTILINE)
        defined = set(re.findall(r"^function lib\.(\w+)\(", text, re.MULTILINE))
        called = set(re.findall(r"\blib\.(\w+)", code)) - defined
        assert not called, f"{name}.lua calls lib.{sorted(called)} without its definition"
        assert text.count("\n") == (scripts._read("_lib") + "\n" + scripts._read(name)).count("\n")
        rclient.script_load(text)  # and it compiles
