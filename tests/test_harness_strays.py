"""The test harness itself: a process an earlier test left on the private test Redis is
stopped before the next test starts (tests/conftest.py's _stop_strays)."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import redis

from drain.settings import Settings
from tests.conftest import _stop_strays, wait_for


def _foreign(client: redis.Redis) -> bool:
    """Whether another process than this one is connected."""
    mine = {c.laddr.port for c in psutil.Process().net_connections(kind="tcp") if c.laddr}
    return any(int(c["addr"].rpartition(":")[2]) not in mine for c in client.client_list())


def test_a_worker_left_on_the_test_redis_is_stopped_before_the_next_test(
        rclient: redis.Redis, redis_server: int, settings: Settings) -> None:
    """A `drain worker` orphaned by an earlier test (its parent killed at a timeout) took the
    next tests' mail and sent it to a relay long gone: on CI every later test of that xdist
    process failed. Mutant caught: _stop_strays without the kill (the worker lives on)."""
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=settings.relay)
    stray = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--log-level", "WARNING"], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _foreign(rclient), what="the stray worker connecting")
        _stop_strays(rclient, redis_server)
        assert stray.wait(timeout=20) is not None
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()
