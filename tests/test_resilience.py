"""The worker's Store across Redis outages: strays given back, no reaping right after a restart,
settles that wait for Redis, unreadable data that does not stall a batch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from drain.store.store import Outcome
from drain.worker.resilience import ResilientStore
from tests.chaos_kit import RedisProc, wait_until


def test_strays_of_a_lost_claim_reply_are_given_back(client: Client, settings: Settings) -> None:
    store = ResilientStore(client.redis, settings)
    client.enqueue_many([synthetic(i) for i in range(6)])
    lost = store.claim("w1", 4)  # pretend its reply never arrived
    assert len(lost.ids) == 4 and client.store.books().in_flight == 4
    store.claim("w2", 10)  # another worker's claim is not touched
    assert store.give_back("w1") == 4
    books = client.store.books()
    assert (books.in_flight, books.ready) == (2, 4)
    assert store.held() == {"w2": store.held()["w2"]}


def test_no_reaping_until_leases_could_be_renewed_after_a_restart(tmp_path: Path, settings: Settings) -> None:
    server = RedisProc(tmp_path / "r").start()
    try:
        s = settings.with_(redis_url=server.url, lease_ttl_s=1.0)
        api = Client(redis.Redis(port=server.port), s)
        api.enqueue_many([synthetic(i) for i in range(3)])
        store = ResilientStore(api.redis, s)
        store.claim("gone", 3)
        api.redis.delete(keys.lease("gone"))
        server.restart(down_s=0)
        assert store.reap_dead() == (0, 0)  # up for less than two lease times: leases may just be late
        wait_until(lambda: store.reap_dead() == (3, 0), 10, "reaping once the server has been up a while")
        assert api.store.books().in_flight == 0
    finally:
        server.stop()


def test_a_settle_waits_for_redis_to_come_back(tmp_path: Path, settings: Settings) -> None:
    server = RedisProc(tmp_path / "r").start()
    try:
        s = settings.with_(redis_url=server.url, lease_ttl_s=30.0)
        api = Client(redis.Redis(port=server.port), s)
        (msg_id,) = api.enqueue_many([synthetic(1)]).ids
        store = ResilientStore(redis.Redis(port=server.port), s)
        store.claim("w", 1)
        server.kill()
        result: list[tuple[int, int]] = []
        settling = threading.Thread(target=lambda: result.append(store.settle("w", [Outcome(msg_id, "delivered")])))
        settling.start()
        time.sleep(0.3)  # the outage itself: the settle meets a dead Redis first
        assert settling.is_alive()
        server.start()
        settling.join(timeout=30)
        assert result == [(1, 0)]
        assert api.store.books().delivered == 1
    finally:
        server.stop()
