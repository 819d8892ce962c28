"""No silent surprises at start-up: the embedded Redis is announced, long-running commands
say what they run with, idle workers log no errors, and the audit names a real account."""

from __future__ import annotations

import json
import logging
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from rq.exceptions import DequeueTimeout, StopRequested

from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.settings import Settings
from drain.store import keys
from drain.store.connection import connect
from drain.worker import runtime
from drain.worker.rqworker import DrainWorker


def drain_without_url(home: Path, *args: str, extra: dict[str, str] | None = None,
                      ) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DRAIN_REDIS_URL"}
    env.update(DRAIN_HOME=str(home), **(extra or {}))
    return subprocess.run([sys.executable, "-m", "drain", *args], capture_output=True, env=env, timeout=60,
                          check=False, stdin=subprocess.DEVNULL)


def test_the_embedded_redis_is_announced_on_stderr_with_its_folder(tmp_path: Path) -> None:
    home = tmp_path / "fresh home"
    try:
        first = drain_without_url(home, "status", "--json")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["accepted"] == 0  # stdout holds the JSON only
        assert f"starting a new, empty embedded Redis in {home.resolve()}" in first.stderr.decode()
        again = drain_without_url(home, "status", "--json")
        assert again.returncode == 0, again.stderr
        err = again.stderr.decode()
        assert f"using the embedded Redis in {home.resolve()}" in err and "new" not in err
        assert len(err.strip().splitlines()) == 1
    finally:
        drain_without_url(home, "server", "stop")


def test_a_configured_redis_is_not_announced(settings: Settings, rclient: redis.Redis) -> None:
    from tests.test_cli import drain

    result = drain(settings, "status", "--json")
    assert result.returncode == 0 and b"embedded" not in result.stderr, result.stderr


def test_a_worker_says_which_redis_relay_and_rates(settings: Settings, rclient: redis.Redis, relay: Sink) -> None:
    from tests.test_cli import drain

    ratelimit.set_global(rclient, 50.0)
    ratelimit.set_domain(rclient, "slow.example.com", 0.0)
    secret_relay = relay.url.replace("smtp://", "smtp://mailer:s3cret-pw@")
    result = drain(settings, "worker", "--burst", env={"DRAIN_RELAY": secret_relay})
    assert result.returncode == 0, result.stderr
    err = result.stderr.decode()
    line = next(line for line in err.splitlines() if line.startswith("drain worker:"))
    assert settings.redis_url in line and "mailer:***@" in line
    assert "global 50/s" in line and "slow.example.com 0 (held)" in line
    assert "s3cret-pw" not in err


def _first_stderr_line(settings: Settings, command: str, relay: str) -> str:
    """The first line a long-running `drain COMMAND --listen ...` writes to stderr, then it is stopped."""
    from drain.demo.sink import free_port

    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=relay)
    proc = subprocess.Popen([sys.executable, "-m", "drain", command, "--listen", f"127.0.0.1:{free_port()}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        return proc.stderr.readline().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_smtpd_says_what_it_runs_with_and_hides_passwords(settings: Settings, rclient: redis.Redis) -> None:
    line = _first_stderr_line(settings, "smtpd", "smtps://u:hidden-pw@relay.example:465")
    assert line.startswith("drain smtpd: Redis ") and "relay smtps://u:***@relay.example:465" in line
    assert "rates global unlimited" in line and "hidden-pw" not in line


def test_worker_sockets_outlast_the_blocking_dequeue(settings: Settings, rclient: redis.Redis) -> None:
    client = connect(settings)  # pinged: the pool holds a connection made before the worker
    worker = DrainWorker([keys.RQ_QUEUE], connection=client, drain_settings=settings)
    connection = client.connection_pool.get_connection()
    try:
        assert connection.socket_timeout is not None
        assert connection.socket_timeout >= worker.dequeue_timeout + runtime.SOCKET_MARGIN_S
    finally:
        client.connection_pool.release(connection)
        client.close()


class _Errors(logging.Handler):
    """Counts ERROR records; stops the worker at the first (its loop would retry forever)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        raise StopRequested()


def test_an_idle_worker_logs_no_errors(settings: Settings, rclient: redis.Redis) -> None:
    # A short dequeue (worker_ttl 17 s: RQ blocks 2 s per dequeue) on a client whose first
    # connection has a socket timeout shorter than that.
    client = redis.Redis.from_url(settings.redis_url or "", socket_timeout=1)
    held = [client.connection_pool.get_connection() for _ in range(4)]  # a pool that has worked a while
    for connection in held:
        client.connection_pool.release(connection)
    worker = DrainWorker([keys.RQ_QUEUE], connection=client, drain_settings=settings, housekeeping=False,
                         worker_ttl=17)
    assert worker.dequeue_timeout == 2
    errors = _Errors()
    rq_log = logging.getLogger("rq.worker")
    rq_log.addHandler(errors)
    try:
        worker.work(burst=False, max_idle_time=3, logging_level="WARNING", with_scheduler=False)
    finally:
        rq_log.removeHandler(errors)
        client.close()
    assert [r.getMessage() for r in errors.records] == []


def test_an_idle_dequeue_times_out_as_rq_means_it(settings: Settings, rclient: redis.Redis) -> None:
    from drain.worker.dispatch import rq_queue

    client = redis.Redis.from_url(settings.redis_url or "", socket_timeout=1)
    client.ping()
    runtime.fit_socket_timeout(client, 2)
    with pytest.raises(DequeueTimeout):
        rq_queue(client).dequeue_any([rq_queue(client)], 2, connection=client)
    client.close()


def test_the_actor_is_a_real_account_without_user(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env({"HOME": "/nonexistent"})
    name = pwd.getpwuid(os.getuid()).pw_name
    assert settings.actor.startswith(f"{name}@") and "unknown" not in settings.actor
    assert Settings.from_env({"USER": "alice"}).actor.startswith("alice@")


def test_serve_says_what_it_runs_with(settings: Settings, rclient: redis.Redis) -> None:
    ratelimit.set_global(rclient, 0.0)
    line = _first_stderr_line(settings, "serve", "smtp://u:serve-pw@relay.example:25")
    assert line.startswith("drain serve: Redis ") and "relay smtp://u:***@relay.example:25" in line
    assert "rates global 0 (held)" in line and "serve-pw" not in line
