"""The enqueue script's message table and per-chunk counters (lua/enqueue.lua, Enqueue._call):
each message's fields reach its hash, and the figures the script keeps once per chunk are
those of counting message by message; the wire's own RESP packing is redis-py's."""

from __future__ import annotations

import time

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from drain.demo.seeding import synthetic
from drain.intake import api
from drain.intake.api import Client
from drain.message import Envelope, envelope_from_headers
from drain.store import body, enqueue, enqueue_wire, keys
from drain.store.enqueue_wire import packed

WHY = '[{"code":"rule.match","detail":"held by a test rule"}]'


def test_a_mixed_chunk_keeps_every_field_and_figure(client: Client, rclient: redis.Redis) -> None:
    """Ready and held messages, two tenants, three domains, compressed and plain bodies in
    one chunk. Mutants caught: a held message counted in the domain's shape or its tenant's
    ready count; the domain or tenant places off by one (fields of another message); the
    size of a compressed body left out or given to a plain one; a held message pushed on
    its tenant's list; the findings count per message instead of per held message."""
    small = b"From: a@x.example\nTo: u@one.example\n\nhi\n"
    rows = [(synthetic(1), "u1@one.example", None, "t1"), (small, "u2@two.example", None, "t2"),
            (synthetic(3), "u3@one.example", WHY, "t1"), (synthetic(4), "u4@Three.example", None, "t2"),
            (synthetic(5), "u5@two.example", WHY, "t2"), (synthetic(6), "u6@one.example", None, "t1")]
    items = [(raw, Envelope("a@x.example", (rcpt,)), why) for raw, rcpt, why, _t in rows]
    ids = client.store.enqueue_many(items, tenants=[t for *_x, t in rows])

    for msg_id, (raw, rcpt, why, tenant) in zip(ids, rows, strict=True):
        got = rclient.hgetall(keys.message(msg_id))
        assert body.unpack(got[b"raw"]) == raw
        assert (got[b"dom"], got[b"tn"]) == (rcpt.partition("@")[2].lower().encode(), tenant.encode())
        assert got.get(b"sz") == (str(len(raw)).encode() if got[b"raw"][:3] == body.MARK else None)
        assert got.get(b"why") == (why.encode() if why else None)
    assert rclient.hget(keys.message(ids[0]), "sz") is not None and rclient.hget(keys.message(ids[1]), "sz") is None
    lists = {t: [i.decode() for i in rclient.lrange(keys.lane("fresh", t), 0, -1)] for t in ("t1", "t2")}
    assert lists == {"t1": [ids[0], ids[5]], "t2": [ids[1], ids[3]]}
    assert [i.decode() for i in rclient.zrange(keys.QUARANTINE, 0, -1)] == [ids[2], ids[4]]
    minute = int(float(rclient.hget(keys.message(ids[0]), "t") or 0) // 60)
    assert {k.decode(): int(v) for k, v in rclient.hgetall(keys.SHAPE).items()} == {
        f"one.example|{minute}": 2, f"two.example|{minute}": 1, f"three.example|{minute}": 1}
    assert {k.decode(): int(v) for k, v in rclient.hgetall(keys.TENANT_SHAPE).items()} == {"t1": 2, "t2": 2}
    assert int(rclient.hget(keys.READY_COUNT, "fresh") or 0) == 4
    assert int(rclient.hget(keys.FINDINGS, "rule.match") or 0) == 2
    books = client.store.books()
    assert (books.accepted, books.ready, books.quarantined) == (6, 4, 2) and books.balanced
    assert rclient.zrange(keys.SEQ_TIME, 0, -1) == [ids[-1].encode()]


def test_ids_past_a_run_of_256_are_their_numbers_in_hex(client: Client, rclient: redis.Redis) -> None:
    """The script makes each id from the chunk's first number. Mutant caught: an id's
    number off by one (the producer's ids and the hashes' keys would differ)."""
    rclient.set(keys.SEQ, 0xFFF0)
    ids = client.store.enqueue_many([(synthetic(i), Envelope("a@x.example", ("u@y.example",)), None)
                                     for i in range(40)])
    assert ids[0] == "fff1" and ids[-1] == "10018"
    assert all(rclient.exists(keys.message(i)) for i in ids)
    assert [i.decode() for i in rclient.lrange(keys.lane("fresh", "x.example"), 0, -1)] == ids


@pytest.mark.parametrize("hiredis", [True, False])
def test_the_wires_packing_is_redis_pys(rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch, hiredis: bool) -> None:
    """By hiredis's packer and by the join without it. Mutants caught: a length counted in
    characters, not bytes; an int written otherwise than redis-py writes it; a missing CRLF."""
    if not hiredis:
        monkeypatch.setattr(enqueue_wire, "_pack_command", None)
    conn = rclient.connection_pool.get_connection()
    try:
        for args in [("EVALSHA", "x" * 40, 2, "k1", "k2", b"\x00\xdcs\xff", "j\u00f6rg", 12345678901234, -3, "",
                      1.5, f"{time.time():.3f}"), ("SET", "k", bytearray(b"ab"), memoryview(b"cd"))]:
            assert packed(conn, args) == b"".join(conn.pack_command(*args))
    finally:
        rclient.connection_pool.release(conn)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["From", "To", "Cc", "Sender", "Resent-To", "Return-Path"]),
                          st.binary(max_size=30)), max_size=5))
def test_an_envelope_read_from_the_headers_is_always_holdable(fields: list[tuple[str, bytes]]) -> None:
    """Client.prepare checks only the addresses a caller gives (api._holdable): those read
    from the headers are UTF-8 text whatever bytes the headers hold. Mutant caught: an
    8-bit header value kept as surrogate escapes (message.header_text not decoding it)."""
    raw = b"".join(name.encode() + b": " + value.replace(b"\n", b" ") + b"\n" for name, value in fields) + b"\nbody\n"
    env = envelope_from_headers(raw)
    api._holdable(env.sender, env.recipients)  # raises InputError when one is not UTF-8 text


@pytest.mark.parametrize("count", [1, 5, 7, 9])
def test_bodies_compressed_a_slice_at_a_time_land_in_their_own_messages(
        client: Client, rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """The packer thread compresses bodies in slices as the input gives them; each chunk
    takes the forms of its own bodies (chunks of 3, slices of 2: slices that straddle no
    chunk, a chunk's last body alone, an input under one slice packed inline). Mutants
    caught: a chunk's leftover bodies not handed to the packer; the slices of a chunk not
    cleared at take() (the next chunk given the bodies before it); forms put in place in
    the wrong order."""
    monkeypatch.setattr(enqueue, "ENQUEUE_CHUNK", 3)
    monkeypatch.setattr(enqueue, "PACK_SLICE", 2)
    raws = [synthetic(i, size=1500 + 50 * i) for i in range(count)]
    ids = client.store.enqueue_many([(raw, Envelope("a@x.example", ("u@y.example",)), None) for raw in raws])

    for msg_id, raw in zip(ids, raws, strict=True):
        stored = rclient.hget(keys.message(msg_id), "raw") or b""
        assert stored[:3] == body.MARK and body.unpack(stored) == raw
        assert rclient.hget(keys.message(msg_id), "sz") == str(len(raw)).encode()
