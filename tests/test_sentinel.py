"""High availability: drain finds the master through Redis Sentinel (redis+sentinel:// URLs)
and follows it through a failover, losing nothing that was acknowledged."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from drain import validate
from drain.demo.seeding import synthetic
from drain.demo.sink import Action, Received, Sink, Stall, free_port
from drain.errors import ConfigError
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.observe.http import StatusServer
from drain.settings import Durability, Settings
from drain.store import keys, tenancy
from drain.store.connection import SentinelUrl, connect
from drain.store.store import Outcome, Store
from drain.worker import runtime
from drain.worker.batch import Batch
from drain.worker.delivery import Relay, RelayConfig
from drain.worker.resilience import ResilientStore
from drain.worker.runtime import Runtime
from tests.chaos_kit import RedisProc, wait_until
from workers.jobs import deliver_batch

SERVICE = "drainmaster"


def test_sentinel_urls_are_parsed() -> None:
    where = SentinelUrl.parse("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2/mymaster/2")
    assert where.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379))
    assert (where.service, where.db, where.password) == ("mymaster", 2, "pw")
    for bad in ("redis+sentinel://h:1/", "redis+sentinel://h:x/m", "redis+sentinel://h:1/m/notadb"):
        with pytest.raises(ConfigError):
            SentinelUrl.parse(bad)


@dataclass
class Cluster:
    master: RedisProc
    replica: RedisProc
    sentinel: subprocess.Popen[bytes]
    sentinel_port: int

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}/0"

    def master_port(self) -> int:
        _host, port = redis.Redis(port=self.sentinel_port).sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def fail_over(self) -> None:
        """Have the sentinel promote the replica, then demote the old master and wait until it
        follows the new one. Clients made before keep their connections to the old master."""
        sentinel = redis.Redis(port=self.sentinel_port)
        wait_until(lambda: bool(sentinel.sentinel_failover(SERVICE)), 20, "sentinel to take the failover")
        wait_until(lambda: self.master_port() == self.replica.port, 30, "the failover")
        self.demote_old_master()
        old = redis.Redis(port=self.master.port)
        wait_until(lambda: old.info("replication").get("master_link_status") == "up", 30,
                   "the old master to follow the new one")

    def demote_old_master(self) -> None:
        """After the failover, point the old master at the new one: what the sentinel does
        itself when it next looks at the old master (INFO every 10 s, which tests need not
        wait for). Drain's clients are not told; they still learn the master from the sentinel."""
        redis.Redis(port=self.master.port).replicaof("127.0.0.1", self.replica.port)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    master = RedisProc(tmp_path / "master").start()
    replica = RedisProc(tmp_path / "replica", "--replicaof", "127.0.0.1", str(master.port)).start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1\n"
                    f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                    f"sentinel failover-timeout {SERVICE} 5000\n")
    sentinel = subprocess.Popen([master.binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    found = Cluster(master, replica, sentinel, port)
    try:
        wait_until(lambda: redis.Redis(port=port).sentinel_slaves(SERVICE) != [], 20, "sentinel to see the replica")
        yield found
    finally:
        sentinel.kill()
        sentinel.wait(timeout=10)
        replica.stop()
        master.stop()


def test_through_sentinel_and_across_a_failover(cluster: Cluster, relay: Sink) -> None:
    settings = Settings(redis_url=cluster.url, relay=relay.url, durability=Durability.parse("replicas:1"),
                        lease_ttl_s=1.0)
    api = Client.connect(settings)
    first = api.enqueue_many([synthetic(i) for i in range(20)]).ids
    assert len(tenancy.ready_ids(redis.Redis(port=cluster.master.port), "fresh")) == 20

    # Failover: the replica becomes master; drain's client follows the sentinel's word.
    wait_until(lambda: bool(redis.Redis(port=cluster.sentinel_port).sentinel_failover(SERVICE)), 20,
               "sentinel to take the failover")
    wait_until(lambda: cluster.master_port() == cluster.replica.port, 30, "the failover")
    cluster.demote_old_master()
    # Until the old master is told it is a replica it still takes writes (Redis Sentinel's own
    # window; min-replicas-to-write narrows it): drain's client asks the sentinel each time it connects.
    wait_until(lambda: redis.Redis(port=cluster.master.port).info("replication")["role"] == "slave", 30,
               "the old master to become a replica")
    client = connect(settings)
    wait_until(lambda: client.connection_pool.get_master_address()[1] == cluster.replica.port, 20,
               "the client to follow the new master")
    api = Client(client, settings.with_(durability=Durability.parse("none")))
    second = api.enqueue_many([synthetic(i) for i in range(20, 30)]).ids
    books = api.store.books()
    assert books.accepted == 30 and books.ready == 30  # nothing acknowledged was lost
    assert set(first).isdisjoint(second)

    env = {**os.environ, "DRAIN_REDIS_URL": cluster.url, "DRAIN_RELAY": relay.url, "DRAIN_LEASE_TTL": "1"}
    worker = subprocess.run([sys.executable, "-m", "drain", "worker", "--burst", "--processes", "2"], env=env,
                            capture_output=True, timeout=120, check=False)
    assert worker.returncode == 0, worker.stderr.decode()[-2000:]
    books = api.store.books()
    assert (books.delivered, books.queued) == (30, 0), (books, worker.stderr.decode()[-3000:])
    assert len(relay.messages) == 30


def test_serve_reads_its_figures_through_sentinel(cluster: Cluster, relay: Sink) -> None:
    """`drain serve` given a redis+sentinel:// URL asks the sentinel for the master and shows its books."""
    settings = Settings(redis_url=cluster.url, relay=relay.url)
    Client.connect(settings).enqueue_many([synthetic(i) for i in range(3)])
    server = StatusServer(cluster.url, settings, "127.0.0.1", 0, refresh_s=0.1)
    server.start()
    try:
        wait_until(lambda: server.snapshots.view().up, 20, "the first snapshot read through the sentinel")
        with urllib.request.urlopen(server.url + "status.json", timeout=10) as reply:
            doc = json.loads(reply.read())
    finally:
        server.stop()
    assert doc["redis"]["up"] is True
    assert (doc["status"]["accepted"], doc["status"]["ready"]) == (3, 3)


def test_a_running_worker_and_its_client_ride_through_a_failover(cluster: Cluster, relay: Sink,
                                                                tmp_path: Path) -> None:
    """One producer client and one long-running `drain worker` process, both made before the
    failover and kept through it. The relay holds one message mid-batch while the failover
    runs, so the worker is holding claimed, partly settled mail when the master changes.

    Checked at the relay by Message-ID: every message enqueued before and after the failover
    arrives, and arrives once. drain's promise is at least once, with repeats bounded by
    DRAIN_SETTLE_EVERY (outcomes not yet settled when the master changed); a failover
    that loses no acknowledged write (Sentinel promotes the replica that has it all) repeats
    none here, and the test allows no more than that window."""
    settle_every = 5
    first_lot, second_lot = range(30), range(30, 40)
    stalled, release = threading.Event(), threading.Event()

    def hold_one(index: int, _msg: Received) -> Action:
        if index == 7:  # mid-batch: five outcomes settled, two more delivered, not yet settled
            stalled.set()
            return Stall(120, release)
        return None

    relay.set_policy(hold_one)
    settings = Settings(redis_url=cluster.url, relay=relay.url, durability=Durability.parse("replicas:1"),
                        lease_ttl_s=1.0)
    api = Client.connect(settings)  # kept through the failover
    first = api.enqueue_many([synthetic(i) for i in first_lot]).ids
    env = {**os.environ, "DRAIN_REDIS_URL": cluster.url, "DRAIN_RELAY": relay.url, "DRAIN_LEASE_TTL": "1",
           "DRAIN_SETTLE_EVERY": str(settle_every), "DRAIN_BATCH_SIZE": "20"}
    log = tmp_path / "worker.log"
    with open(log, "wb") as err:
        worker = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--log-level", "WARNING"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=err)
    with showing_log(log):
        _ride_through(cluster, api, worker, release, stalled, first, second_lot)
        copies = Counter(m.message_id for m in relay.messages)
        assert sorted(copies) == sorted(f"<synthetic-{i}@sender.example.com>" for i in (*first_lot, *second_lot))
        repeated = {m: n for m, n in copies.items() if n > 1}
        # At least once: repeats only of mail the worker held when the master changed, at most
        # one settle window of it.
        assert sum(repeated.values()) - len(repeated) <= settle_every, repeated
        assert all(int(m.split("-")[1].split("@")[0]) in first_lot for m in repeated), repeated
        books = api.store.books()
        assert books.delivered == 40, books  # the books count each message once
        assert "Traceback" not in log.read_text(), "a traceback in the worker's log"


# What the ride-through test may take in all, kept under pytest-timeout (120 s, pyproject), so
# that a wait that runs out fails with its own message and the worker's log, not a bare Timeout.
RIDE_BUDGET_S = 100.0


@contextlib.contextmanager
def showing_log(log: Path) -> Iterator[None]:
    """A failed assertion's message gets the worker's log (its end): on CI it is all there is."""
    try:
        yield
    except AssertionError as exc:
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        raise AssertionError(f"{exc}\n--- {log} (last 8000 characters):\n{text[-8000:]}") from None


def _ride_through(cluster: Cluster, api: Client, worker: subprocess.Popen[bytes], release: threading.Event,
                  stalled: threading.Event, first: list[str], second_lot: range) -> None:
    """The failover while the worker is mid-batch, the second lot, and the wait for both lots."""
    deadline = time.monotonic() + RIDE_BUDGET_S

    def left(most: float) -> float:
        return max(1.0, min(most, deadline - time.monotonic()))

    second: list[str] = []

    def enqueue_second() -> bool:
        # The producer's pooled connection still points at the old master: its first write
        # may fail (READONLY becomes a ConnectionError); the same client then follows.
        try:
            second.extend(api.enqueue_many([synthetic(i) for i in second_lot]).ids)
        except redis.ConnectionError:
            return False
        return True

    try:
        wait_until(stalled.is_set, left(60), "the worker to be mid-batch")
        cluster.fail_over()
        release.set()
        wait_until(enqueue_second, left(30), "the kept client to enqueue on the new master")
        new = redis.Redis(port=cluster.replica.port)
        books = api.store.books
        wait_until(lambda: books().delivered >= 40 and books().queued == 0, left(RIDE_BUDGET_S),
                   "delivery of both lots")
        assert worker.poll() is None, "the worker did not live through the failover"
        assert int(new.hget(keys.BOOKS, "accepted") or 0) == 40
        worker.terminate()  # idle now: a warm shutdown ends at once (it hung before, see below)
        assert worker.wait(timeout=left(30)) == 0
    except AssertionError as exc:
        raise AssertionError(f"{exc}; books on the new master: {api.store.books()}") from None
    finally:
        release.set()
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    assert len(set(first) | set(second)) == 40


def test_a_settle_sent_to_the_demoted_master_is_repeated_on_the_new_one(cluster: Cluster) -> None:
    """A worker's pooled connection may still be open to the old master after a failover.
    A settle (a Lua script) sent there fails on the replica with READONLY inside the script's
    error. It must read as the connection trouble it is, so the worker's store repeats it on
    the new master; taken for a plain script error, it failed the batch's last settle and left
    the claim in flight under a live worker, never given back (the ride-through test timed out)."""
    settings = Settings(redis_url=cluster.url, lease_ttl_s=60.0)
    client = connect(settings)  # one pooled connection, to the master of now
    Client(client, settings).enqueue_many([synthetic(i) for i in range(3)])
    store = ResilientStore(client, settings)
    ids = store.claim("worker-1", 3).ids
    assert len(ids) == 3
    replica = redis.Redis(port=cluster.replica.port)
    wait_until(lambda: replica.hlen(keys.INFLIGHT) == 3, 20, "the replica to have the claim")
    cluster.fail_over()

    assert store.settle("worker-1", [Outcome(i, "requeue") for i in ids]) == (3, 0)
    books = Store(replica, settings).books()  # the replica is the master now
    assert (books.in_flight, books.ready) == (0, 3), books


def test_a_batch_checks_its_lease_on_the_new_master_after_a_failover(cluster: Cluster, relay: Sink) -> None:
    """A batch that was mid-send while the master changed, and whose lease is due a check
    (drain.worker.batch: LEASE_CHECK_AFTER), asks on a connection still open to the old
    master. The check (renew the lease, read the owner) is safe to repeat: it waits for the
    new master and goes on, where it used to fail the job (a traceback in the worker's log)."""
    settings = Settings(redis_url=cluster.url, relay=relay.url, lease_ttl_s=60.0)
    client = connect(settings)
    Client(client, settings).enqueue_many([synthetic(i) for i in range(3)])
    replica = redis.Redis(port=cluster.replica.port)
    now = [1000.0]

    def fail_over_during_first_send(index: int, _msg: Received) -> Action:
        if index == 0:
            wait_until(lambda: replica.hlen(keys.INFLIGHT) == 3, 20, "the replica to have the claim")
            cluster.fail_over()
            now[0] += settings.lease_ttl_s  # the next message's ownership check is due
        return None

    relay.set_policy(fail_over_during_first_send)
    sender = Relay(RelayConfig.from_url(relay.url), timeout_s=60.0)
    try:
        batch = Batch(ResilientStore(client, settings), sender, "worker-1", validate.Limits(),
                      lease_clock=lambda: now[0])
        assert batch.run() == 3
    finally:
        sender.close()
    assert not batch.lost
    books = Store(replica, settings).books()
    assert (books.delivered, books.in_flight) == (3, 0), books
    assert relay.accepted == 3


def test_a_batch_job_that_meets_the_old_master_ends_with_one_line_and_holds_nothing(
        cluster: Cluster, relay: Sink, caplog: pytest.LogCaptureFixture) -> None:
    """A batch job whose next command after a send went to the demoted master (here the
    second message's ask at its domain's rate limit, a script) failed as an RQ job with a
    traceback, though the batch had settled or given back all it held. It ends with one
    warning now, and the next job delivers the rest."""
    settings = Settings(redis_url=cluster.url, relay=relay.url, lease_ttl_s=60.0, relay_sessions=1)
    client = connect(settings)  # one thread: one pooled connection, to the master of now
    ratelimit.set_domain(client, "example.org", 1000.0)  # each message asks the gate
    Client(client, settings).enqueue_many([synthetic(i, domain="example.org") for i in range(3)])
    replica = redis.Redis(port=cluster.replica.port)

    def fail_over_during_first_send(index: int, _msg: Received) -> Action:
        if index == 0:
            wait_until(lambda: replica.hlen(keys.INFLIGHT) == 3, 20, "the replica to have the claim")
            cluster.fail_over()
        return None

    relay.set_policy(fail_over_during_first_send)
    rt = Runtime.build(client, settings)
    rt.start(housekeeping=False)
    runtime.install(rt)
    try:
        assert deliver_batch() == 0
        books = Store(replica, settings).books()
        assert (books.delivered, books.ready, books.in_flight) == (1, 2, 0), books
        assert "Redis unavailable during a batch" in caplog.text
        assert deliver_batch() == 2
    finally:
        runtime.install(None)
        rt.stop()
    assert Store(replica, settings).books().delivered == 3
    assert relay.accepted == 3


def test_an_interrupted_read_does_not_leave_a_reply_behind(cluster: Cluster) -> None:
    """A worker's SIGTERM reaches it as an exception raised inside its blocking dequeue. On a
    Sentinel connection redis-py used to keep that socket, so the next command (RQ's teardown,
    in a worker stopped after a failover) waited out the dequeue and read its reply instead."""
    client = connect(Settings(redis_url=cluster.url))

    class Stopped(Exception):
        pass

    def stop(_signum: int, _frame: object) -> None:
        raise Stopped

    previous = signal.signal(signal.SIGALRM, stop)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Stopped):
            client.blpop(["drain:test:nothing"], timeout=3)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert client.ping() is True  # PONG, not the dequeue's empty reply
    assert client.set("drain:test:after", b"1") is True
