"""What one lane guarantees holds with several (DRAIN_RELAY_SESSIONS > 1, drain.worker.lanes):

- a process that dies while working a suspect held nothing else, so only that suspect takes
  the strike (suspects are worked alone in the process, drain.worker.alone);
- the job's time limit strikes the message in progress longest, in whichever lane, and no
  lane starts a message past the job's deadline;
- a claim whose reply was lost gives back only that lane's mail (each lane claims under an
  owner of its own), so no other lane's message is delivered twice.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import redis
from rq import Queue
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from drain.demo.seeding import synthetic, with_message_id
from drain.demo.sink import Received, Sink, Stall
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from drain.store.connection import client_for
from drain.store.scripts import source
from drain.worker.dispatch import ensure_tokens
from drain.worker.housekeeping import run_once
from drain.worker.resilience import ResilientStore
from drain.worker.rqworker import DrainWorker
from tests.conftest import wait_for
from tests.reply_eater import ReplyEater
from tests.test_lost_replies import _sha
from tests.test_poison import POISON_ROUNDS, killed_worker

POISON = "<poison@example.com>"
INNOCENT = "<innocent@example.com>"


def _reasons(client: Client, msg_id: str) -> list[str]:
    why = json.loads(client.redis.hget(keys.message(msg_id), "why") or b"[]")
    return [f["code"] for f in why]


def _strikes(client: Client, ids: list[str]) -> dict[str, int]:
    found = {i: client.redis.hget(keys.message(i), "strikes") for i in ids}
    return {i: int(n) for i, n in found.items() if n is not None and int(n) > 0}


def test_a_process_that_dies_on_a_suspect_strikes_no_other_lanes_suspect(
        client: Client, relay: Sink, settings: Settings, work: Callable[..., bool]) -> None:
    """Two suspects (one strike each: a dead worker held them). The poison one kills the worker
    process the moment the relay gets it; the innocent one is held at the relay until then. With
    two lanes working them side by side, both would be in flight at the death and both
    quarantined; worked alone, only the poison one is."""
    total = 8
    raws = [with_message_id(synthetic(0), POISON), with_message_id(synthetic(1), INNOCENT),
            *(synthetic(i) for i in range(2, total))]
    ids = client.enqueue_many(raws).ids
    store = client.store
    assert store.claim("ghost", 2).ids == ids[:2]
    client.redis.delete(keys.lease("ghost"))  # its owner died without a word: both are suspects
    assert store.reap_dead() == (2, 0)
    victim: dict[str, int] = {}
    poisoned = threading.Event()

    def policy(_index: int, msg: Received) -> Stall | None:
        if msg.message_id == POISON and "pid" in victim:
            os.kill(victim.pop("pid"), signal.SIGKILL)
            poisoned.set()
        if msg.message_id == INNOCENT:
            return Stall(seconds=3, release=poisoned)
        return None

    relay.set_policy(data_policy=policy)
    killed_worker(client, settings, relay, victim, DRAIN_RELAY_SESSIONS="2")
    assert _reasons(client, ids[0]) == ["poison.crash"]
    assert client.redis.zscore(keys.QUARANTINE, ids[1]) is None, _reasons(client, ids[1])
    relay.set_policy()
    work(relay_sessions=2)
    books = store.books()
    assert (books.quarantined, books.delivered, books.queued) == (1, total - 1, 0), books
    assert INNOCENT in {m.message_id for m in relay.messages}


def test_the_time_limit_strikes_the_stuck_message_of_another_lane(
        settings: Settings, relay: Sink, rclient: redis.Redis, work: Callable[..., bool],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The poison message hangs at the relay in a lane of its own thread (not the job's). The
    job's thread works the rest and waits; when the time limit strikes, the hanging message
    takes the strike, not whatever the job's thread had, and the job does not wait for it."""
    overrides: dict[str, object] = {"relay_sessions": 2, "batch_size": 6, "job_timeout_s": 1, "relay_timeout_s": 40}
    fast = settings.with_(**overrides)
    client = Client(rclient, fast)  # the jobs it queues have the short time limit
    total = 12
    raws = [with_message_id(synthetic(0), POISON), *(synthetic(i) for i in range(1, total))]
    ids = client.enqueue_many(raws).ids
    release = threading.Event()
    relay.set_policy(data_policy=lambda _i, m: Stall(seconds=30, release=release) if m.message_id == POISON else None)
    original = ResilientStore.claim
    first = [True]

    def claim(self: ResilientStore, owner: str, want: int, *args: object, **kwargs: object) -> object:
        # The first claim of the job's thread waits for another lane to take the poison.
        if first[0] and threading.current_thread() is threading.main_thread():
            first[0] = False
            wait_for(lambda: rclient.hget(keys.INFLIGHT, ids[0]) is not None, 10, "a lane to claim the poison")
        return original(self, owner, want, *args, **kwargs)

    monkeypatch.setattr(ResilientStore, "claim", claim)
    try:
        # Each round whose job reaches the poison before its deadline strikes it (on a loaded
        # box a round may end at the deadline first): a few more rounds than strikes.
        for _round in range(POISON_ROUNDS):
            work(**overrides)
            run_once(client.store, force=True)
            if client.redis.zscore(keys.QUARANTINE, ids[0]) is not None:
                break
        assert _reasons(client, ids[0]) == ["poison.timeout"]
    finally:
        release.set()
    work(relay_sessions=2, batch_size=6, relay_timeout_s=40)
    books = client.store.books()
    assert (books.quarantined, books.delivered, books.queued) == (1, total - 1, 0), books
    assert _strikes(client, ids[1:]) == {}


def test_no_lane_starts_a_message_past_the_job_deadline(
        settings: Settings, relay: Sink, rclient: redis.Redis, work: Callable[..., bool]) -> None:
    """Every message is slow at the relay and a batch is longer than the job's time limit: the
    lanes stop between messages before it, so the limit never strikes healthy mail."""
    client = Client(rclient, settings.with_(job_timeout_s=6))  # the jobs it queues have this limit
    total = 40
    ids = client.enqueue_many([synthetic(i) for i in range(total)]).ids
    # The first lane's claim (30) takes 7.5 s at the relay, past the 6 s limit.
    relay.set_policy(data_policy=lambda _i, _m: Stall(seconds=0.25))
    work(relay_sessions=2, batch_size=30, job_timeout_s=6, settle_every=2)
    queue = Queue(keys.RQ_QUEUE, connection=rclient, serializer=JSONSerializer)
    assert FailedJobRegistry(queue=queue).get_job_ids() == []
    assert _strikes(client, ids) == {}
    books = client.store.books()
    assert (books.delivered, books.queued) == (total, 0), books


@pytest.fixture
def eater(redis_server: int) -> Iterator[Callable[[bytes, int], ReplyEater]]:
    made: list[ReplyEater] = []

    def make(mark: bytes, skip: int) -> ReplyEater:
        made.append(ReplyEater(redis_server, mark, skip))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def test_a_lost_claim_reply_gives_back_only_its_lanes_mail(
        client: Client, relay: Sink, settings: Settings, eater: Callable[[bytes, int], ReplyEater]) -> None:
    """One lane holds a claim and is sending its first message when the other lane's claim
    loses its reply. Only the second claim's mail goes back: the first lane's message, which
    the relay takes, is not also put back to ready to be delivered again."""
    total = 10
    client.enqueue_many([synthetic(i) for i in range(total)])
    client.redis.script_load(source("claim"))
    proxy = eater(_sha("claim"), 1)  # the first claim passes, the second loses its reply
    eaten = threading.Event()
    threading.Thread(target=lambda: (wait_for(lambda: proxy.eaten == 1, 30, "the lost claim"), eaten.set()),
                     daemon=True).start()
    relay.set_policy(data_policy=lambda index, _m: Stall(seconds=30, release=eaten) if index == 0 else None)
    connection = client_for(proxy.url)
    try:
        ensure_tokens(client.redis, settings)
        s = settings.with_(relay_sessions=2, batch_size=5)
        DrainWorker(["drain"], connection=connection, drain_settings=s, housekeeping=False).work(
            burst=True, logging_level="WARNING")
    finally:
        connection.close()
    assert proxy.eaten == 1 and proxy.lost_reply.startswith(b"*"), proxy.lost_reply
    books = client.store.books()
    assert (books.in_flight, books.ready, books.delivered) == (0, 0, total), books
    copies = Counter(m.message_id for m in relay.messages)
    assert len(copies) == total and max(copies.values()) == 1, {m: n for m, n in copies.items() if n > 1}
