"""Redis ran the script but its reply never came back: a TCP proxy (tests/reply_eater.py)
between a worker and Redis forwards one claim or one settle, lets Redis run it, and drops the
connection instead of passing the reply on.

The worker's client is made as drain makes it (drain.store.connection.client_for: redis-py's
own retry is off), so the ConnectionError reaches drain's code: a lost claim reply is met by
giving back whatever Redis holds under the worker's name (drain.worker.resilience), and a
lost settle reply by settling again, which skips what the first settle already recorded.

Nothing may be lost, left in flight under a worker that is still alive, delivered twice, or
counted twice in the books."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import events
from drain.store.connection import client_for
from drain.store.scripts import source
from drain.store.store import Outcome
from drain.worker.dispatch import ensure_tokens
from drain.worker.resilience import ResilientStore
from drain.worker.rqworker import DrainWorker
from tests.conftest import wait_for
from tests.reply_eater import ReplyEater


def _sha(script: str) -> bytes:
    """EVALSHA names the script by the SHA-1 of its source: the mark of that one call."""
    return hashlib.sha1(source(script).encode()).hexdigest().encode()


@pytest.fixture
def eater(redis_server: int) -> Iterator[Callable[[bytes], ReplyEater]]:
    made: list[ReplyEater] = []

    def make(mark: bytes) -> ReplyEater:
        made.append(ReplyEater(redis_server, mark))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def _one_worker(connection: redis.Redis, client: Client, settings: Settings) -> None:
    """One burst worker, one owner, from start to end: strays must come back while it lives."""
    ensure_tokens(client.redis, settings)
    worker = DrainWorker(["drain"], connection=connection, drain_settings=settings, housekeeping=False)
    worker.work(burst=True, logging_level="WARNING")


# A worker's deliveries are settled by deliver.lua (settle.lua's usual call); settle.lua
# is the last test's.
@pytest.mark.parametrize("script", ["claim", "deliver"])
def test_a_lost_script_reply_loses_strands_and_repeats_nothing(
    client: Client, relay: Sink, settings: Settings, eater: Callable[[bytes], ReplyEater], script: str
) -> None:
    total = 30
    client.enqueue_many([synthetic(i) for i in range(total)])
    # Loaded first, so the EVALSHA that loses its reply is one that runs (not a NOSCRIPT).
    client.redis.script_load(source(script))
    proxy = eater(_sha(script))
    connection = client_for(proxy.url)  # as a `drain worker` connects
    try:
        _one_worker(connection, client, settings)
    finally:
        connection.close()
    assert proxy.eaten == 1  # the reply really was lost, once...
    wait_for(lambda: proxy.lost_reply != b"", 10, "the lost reply")
    assert proxy.lost_reply.startswith(b"*"), proxy.lost_reply  # ...and the script had run
    books = client.store.books()
    # A lost claim reply left nothing in flight (it was given back at once, under the same
    # live worker, not by a reaper after it stopped), and the worker went on to deliver it.
    assert (books.in_flight, books.ready, books.deferred) == (0, 0, 0), books
    # A settle repeated after its lost reply counted nothing twice.
    assert books.delivered == total, books
    assert books.balanced, books
    copies = Counter(m.message_id for m in relay.messages)
    assert sorted(copies) == sorted(f"<synthetic-{i}@sender.example.com>" for i in range(total))
    assert max(copies.values()) == 1, {m: n for m, n in copies.items() if n > 1}


def test_a_lost_claim_reply_is_given_back_at_once(
    client: Client, settings: Settings, eater: Callable[[bytes], ReplyEater]
) -> None:
    client.enqueue_many([synthetic(i) for i in range(6)])
    client.redis.script_load(source("claim"))
    proxy = eater(_sha("claim"))
    store = ResilientStore(client_for(proxy.url), settings)
    try:
        claim = store.claim("w1", 4)
    finally:
        store.client.close()
    assert proxy.eaten == 1
    assert claim.ids == []  # the worker never learnt which ids it got...
    books = client.store.books()
    assert (books.in_flight, books.ready) == (0, 6), books  # ...and holds none of them now
    assert client.store.held() == {}


@pytest.mark.parametrize("script", ["settle", "deliver"])
def test_a_settle_whose_reply_was_lost_is_repeated_and_counted_once(
    client: Client, settings: Settings, eater: Callable[[bytes], ReplyEater], script: str
) -> None:
    client.enqueue_many([synthetic(i) for i in range(6)])
    client.redis.script_load(source(script))
    proxy = eater(_sha(script))
    # Deliveries with their event data made by the worker go to deliver.lua, others to settle.lua.
    event = events.delivered_data("250 ok", 1, 0.5) if script == "deliver" else ""
    store = ResilientStore(client_for(proxy.url), settings)
    try:
        ids = store.claim("w1", 4).ids
        result = store.settle("w1", [Outcome(i, "delivered", event=event) for i in ids])
    finally:
        store.client.close()
    assert proxy.eaten == 1 and proxy.lost_reply.startswith(b"*")
    # The first try recorded all four; the repeat found none still held and skipped them.
    assert result == (0, 4)
    books = client.store.books()
    assert (books.delivered, books.in_flight, books.ready) == (4, 0, 2), books


def test_drain_clients_never_resend_a_command_on_their_own(tmp_path: Path) -> None:
    # What the tests above rely on: a re-sent claim would strand the first one's ids.
    for url in ("redis://127.0.0.1:1/0", f"unix://{tmp_path}/r.sock", "rediss://127.0.0.1:1/0",
                "redis+sentinel://127.0.0.1:1/mymaster/0"):
        pool = client_for(url).connection_pool
        assert pool.connection_kwargs["retry"].get_retries() == 0, url
        assert pool.make_connection().retry.get_retries() == 0, url


def test_a_reply_left_due_on_a_pooled_connection_is_not_read_by_the_exit(
        rclient: redis.Redis, settings: Settings) -> None:
    """RQ stops a worker by raising StopRequested from its signal handler, wherever the main
    thread is: between a command's send and its reply that leaves the reply due on a
    connection that goes back to the pool. The worker's exit (RQ's register_death, a MULTI)
    then read it as its own, "Wrong number of response items from pipeline execution", and
    `drain worker` exited 1 (seen once in the Sentinel ride-through test on a loaded box)."""
    worker = DrainWorker(["drain"], connection=rclient, drain_settings=settings, housekeeping=False)
    pool = rclient.connection_pool
    interrupted = pool.get_connection()
    interrupted.send_command("BLPOP", "drain:test:nothing", "0.3")  # its reply comes after a checkout's check
    pool.release(interrupted)

    worker.teardown()
    assert rclient.ping() is True
