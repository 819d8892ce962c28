"""Poison: a message that kills its worker (real SIGKILL) or outlives the job time limit
(a real RQ timeout) is quarantined after the configured strikes, and its batch-mates are
delivered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

from drain.demo.seeding import synthetic, with_message_id
from drain.demo.sink import Received, Sink, Stall
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from drain.worker.housekeeping import run_once
from tests.conftest import wait_for

POISON = "<poison@example.com>"
POISON_ROUNDS = 6


def _reasons(client: Client, msg_id: str) -> list[str]:
    why = json.loads(client.redis.hget(keys.message(msg_id), "why") or b"[]")
    return [f["code"] for f in why]


def killed_worker(client: Client, settings: Settings, relay: Sink, victim: dict[str, int], **env: str) -> None:
    """Run `drain worker` in a process of its own (its pid in `victim`) until the relay kills it
    (SIGKILL), then wait for housekeeping to give back what it held."""
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=relay.url,
               DRAIN_BATCH_SIZE="20", DRAIN_SETTLE_EVERY="5", DRAIN_LEASE_TTL="1", **env)
    proc = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--log-level", "ERROR"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim["pid"] = proc.pid
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    wait_for(lambda: (run_once(client.store, force=True), client.store.books().in_flight == 0)[1],
             what="the dead worker's lease to lapse")


def test_message_that_kills_its_worker_is_quarantined_as_poison(
    client: Client, relay: Sink, settings: Settings, work: Callable[..., bool]
) -> None:
    total = 30
    raws = [synthetic(i) for i in range(total)]
    raws[5] = with_message_id(raws[5], POISON)
    ids = client.enqueue_many(raws).ids
    victim: dict[str, int] = {}

    def policy(_index: int, msg: Received) -> None:
        if msg.message_id == POISON and "pid" in victim:
            os.kill(victim.pop("pid"), signal.SIGKILL)  # the message takes its worker down

    relay.set_policy(data_policy=policy)
    for _death in range(settings.poison_strikes):
        killed_worker(client, settings, relay, victim)

    assert _reasons(client, ids[5]) == ["poison.crash"]
    work()
    books = client.store.books()
    assert books.quarantined == 1 and books.delivered == total - 1 and books.queued == 0
    delivered = {m.message_id for m in relay.messages}
    assert delivered >= {f"<synthetic-{i}@sender.example.com>" for i in range(total) if i != 5}


def test_message_that_outlives_the_job_time_limit_is_quarantined_as_poison(
    rclient: object, settings: Settings, relay: Sink, work: Callable[..., bool]
) -> None:
    import redis

    assert isinstance(rclient, redis.Redis)
    fast = settings.with_(job_timeout_s=1, relay_timeout_s=10)
    client = Client(rclient, fast)
    raws = [synthetic(i) for i in range(12)]
    raws[3] = with_message_id(raws[3], POISON)
    ids = client.enqueue_many(raws).ids
    release = threading.Event()
    relay.set_policy(data_policy=lambda _i, m: Stall(seconds=8, release=release) if m.message_id == POISON else None)
    try:
        # Each round whose job reaches the poison before its deadline strikes it (on a loaded
        # box a round may end at the deadline first): a few more rounds than strikes.
        for _round in range(POISON_ROUNDS):
            work(job_timeout_s=1, relay_timeout_s=10)
            run_once(client.store, force=True)
            if client.redis.zscore(keys.QUARANTINE, ids[3]) is not None:
                break
    finally:
        release.set()
    assert _reasons(client, ids[3]) == ["poison.timeout"]
    work(job_timeout_s=1, relay_timeout_s=10)
    books = client.store.books()
    assert books.balanced
    assert (books.quarantined, books.delivered, books.queued) == (1, 11, 0)


@pytest.mark.parametrize("strikes", [1, 3])
def test_strikes_setting_is_honoured(client: Client, strikes: int) -> None:
    store = client.store
    store.settings = store.settings.with_(poison_strikes=strikes, lease_ttl_s=0.5)
    (msg_id,) = client.enqueue_many([synthetic(1)]).ids
    for death in range(1, strikes + 1):
        claim = store.claim(f"ghost-{death}", 10)
        assert claim.ids == [msg_id]
        assert claim.isolated == (death > 1)
        client.redis.delete(keys.lease(f"ghost-{death}"))  # the owner died without a word
        store.reap_dead()
        in_quarantine = client.redis.zscore(keys.QUARANTINE, msg_id) is not None
        assert in_quarantine == (death == strikes)
    assert store.books().balanced
