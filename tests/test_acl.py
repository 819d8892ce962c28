"""`drain acl`: each role applied to the test redis-server as its own user, shown doing its
work and refused what it must not do."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.observe.status import read
from drain.settings import Settings
from drain.store import acl, enqueue, keys
from drain.store.store import Store
from drain.worker.rqworker import DrainWorker
from tests.chaos_kit import run_drain

RoleClient = Callable[[str], redis.Redis]


@pytest.fixture
def as_role(rclient: redis.Redis, redis_server: int) -> Iterator[RoleClient]:
    """Create each role's user with its own password, as `drain acl` prints it; a client as that user."""
    made: list[redis.Redis] = []

    def connect(role: str) -> redis.Redis:
        password = f"{role}-Secret-{len(made)}"
        rclient.execute_command("ACL", "SETUSER", acl.user_name(role), "reset", "on", f">{password}",
                                *acl.rules(role))
        client = redis.Redis(port=redis_server, username=acl.user_name(role), password=password)
        made.append(client)
        return client

    yield connect
    for client in made:
        client.close()
    for role in acl.ROLES:
        rclient.execute_command("ACL", "DELUSER", acl.user_name(role))


def refused(call: Callable[[], object]) -> bool:
    try:
        call()
    except redis.exceptions.NoPermissionError:
        return True
    return False


def admin_refused(client: redis.Redis) -> None:
    assert refused(client.flushall)
    assert refused(lambda: client.config_get("requirepass"))
    assert refused(lambda: client.config_set("appendonly", "no"))
    assert refused(lambda: client.execute_command("ACL", "LIST"))
    assert refused(lambda: client.execute_command("DEBUG", "SLEEP", "0"))


def test_producer_enqueues_but_cannot_read_quarantine_delete_or_administer(
        as_role: RoleClient, client: Client, settings: Settings) -> None:
    producer = Client(as_role("producer"), settings)
    ids = producer.enqueue_many([synthetic(i) for i in range(5)]).ids
    ids.append(producer.enqueue(synthetic(5)))
    assert client.store.books().ready == 6
    assert client.redis.llen(f"rq:queue:{keys.RQ_QUEUE}") >= 1  # its batch job is queued too

    r = producer.redis
    admin_refused(r)
    assert refused(lambda: r.zrange(keys.QUARANTINE, 0, -1))
    assert refused(lambda: r.hget(keys.message(ids[0]), "raw"))
    assert refused(lambda: r.hmget(keys.message(ids[0]), ["raw", "env"]))
    assert refused(lambda: r.delete(keys.message(ids[0])))
    assert refused(lambda: r.lpop(keys.lane("fresh", "example.com")))
    assert refused(lambda: r.set(keys.PAUSED, "1"))
    assert refused(lambda: r.keys("*"))
    assert client.store.books().ready == 6  # nothing it tried changed the queue


def test_viewer_reads_status_but_cannot_write(as_role: RoleClient, client: Client, settings: Settings) -> None:
    client.enqueue_many([synthetic(i) for i in range(3)])
    viewer = as_role("viewer")
    status = read(Store(viewer, settings))
    assert status.books.ready == 3

    admin_refused(viewer)
    assert refused(lambda: viewer.set(keys.PAUSED, "1"))
    assert refused(lambda: viewer.hset(keys.BOOKS, "delivered", 99))
    assert refused(lambda: viewer.delete(keys.lane("fresh", "example.com")))
    assert refused(lambda: viewer.get("some:other:key"))
    assert client.store.books().ready == 3


def test_worker_runs_a_burst_delivery(as_role: RoleClient, client: Client, settings: Settings,
                                      relay: Sink) -> None:
    client.enqueue_many([synthetic(i) for i in range(12)])
    worker_redis = as_role("worker")
    DrainWorker([keys.RQ_QUEUE], connection=worker_redis, drain_settings=settings,
                housekeeping=True).work(burst=True, logging_level="WARNING")
    assert client.store.books().delivered == 12 and relay.accepted == 12
    admin_refused(worker_redis)


def test_operator_pauses_but_cannot_administer_the_server(as_role: RoleClient, client: Client) -> None:
    operator = as_role("operator")
    ratelimit.pause(operator)
    assert ratelimit.is_paused(client.redis)
    ratelimit.resume(operator)
    assert not ratelimit.is_paused(client.redis)
    admin_refused(operator)
    assert refused(lambda: operator.get("some:other:key"))


def test_drain_acl_prints_one_rule_per_role() -> None:
    secret = "Producer-Secret-77"
    result = run_drain({"DRAIN_ACL_PRODUCER_PASSWORD": secret}, "acl", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert set(found) == {"producer", "worker", "operator", "viewer"}
    assert all(rule.startswith(f"ACL SETUSER drain-{role} reset on ") for role, rule in found.items())
    # A password from the environment is printed only as its SHA-256 (#...), never itself.
    assert secret not in result.stdout.decode() and " #" in found["producer"]


def test_producer_enqueues_many_chunks_with_two_in_flight(
        as_role: RoleClient, client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 2 through the wire (enqueue_wire.py): the count of a call's chunks stored
    and the reservations ahead are the producer's to write; with the events stream's last id
    ahead of the clock, the script reads it (XINFO STREAM). Mutants caught: the count's key
    left out of the producer's keys, XINFO STREAM left out of its commands (NOPERM)."""
    monkeypatch.setattr(enqueue, "ENQUEUE_CHUNK", 2)
    ahead = int(time.time() * 1000) + 60_000
    client.redis.xadd(keys.EVENTS, {"e": "R", "i": "x", "d": "[]"}, id=f"{ahead}-9000")
    producer = Client(as_role("producer"), settings)

    ids = producer.enqueue_many([synthetic(i) for i in range(7)]).ids

    assert len(ids) == 7 == client.store.books().ready
