"""An enqueue stopped by Redis's maxmemory part way reports every chunk it stored.

Chunks go two in flight with an INCRBY behind each that reserves the ids of a chunk to come
(drain/store/enqueue_wire.py). INCRBY is refused at maxmemory while a script that started
below it runs to its end: so a chunk could store, its reservation be refused, and the error
of the reservation lose the stored chunk's ids (`drain enqueue --mbox` said 2,000 queued of
3,000 in the books; CI, session 8). Here the limit is swept across a chunk's size so that
some run lands between a chunk's script and its reservation.
"""

from __future__ import annotations

import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.message import Envelope

ENVELOPE = Envelope("a@x.example", ("u@y.example",))


def test_an_enqueue_stopped_by_maxmemory_reports_every_chunk_it_stored(client: Client) -> None:
    """Mutant caught: enqueue_wire._read raising a reservation's error (the fix removed)."""
    raws = [synthetic(i, size=2048) for i in range(5000)]
    stopped = 0
    for step in range(24):
        client.redis.config_set("maxmemory", 0)
        client.redis.flushdb()
        used = int(client.redis.info("memory")["used_memory"])
        client.redis.config_set("maxmemory", used + 600_000 + step * 60_000)
        stored: list[str] = []
        try:
            client.store.enqueue_many([(raw, ENVELOPE, None) for raw in raws], stored=stored)
        except redis.ResponseError as exc:
            assert "OOM" in str(exc) or "maxmemory" in str(exc), exc
            stopped += 1
        accepted = int(client.redis.hget("drain:books", "accepted") or 0)
        assert accepted == len(stored), (step, accepted, len(stored))
        assert len(set(stored)) == len(stored)
        assert all(client.redis.exists(f"drain:msg:{i}") for i in stored[-1000:])
    client.redis.config_set("maxmemory", 0)
    client.redis.flushdb()
    assert stopped > 0  # the sweep did stop enqueues part way
