"""`drain status --watch` and `drain backlog --watch` on a bad day: Redis restarting under them
(a crash, a failover) is said and waited out, not the end of the watch."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos_kit import RedisProc
from tests.conftest import wait_for


class Screen:
    """What a command running on a pseudo-terminal has written so far."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""

    def read(self) -> bytes:
        while select.select([self.fd], [], [], 0)[0]:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.data += chunk
        return self.data


@pytest.mark.parametrize(("command", "title"), [("status", b"drain status"), ("backlog", b"backlog:")])
def test_a_watch_outlives_a_redis_restart(tmp_path: Path, command: str, title: bytes) -> None:
    """`drain status --watch 0.2` ended with "drain: error: Redis: Error 111 connecting" the
    moment Redis went away: an operator watching through a Redis restart lost the view. Mutant
    caught: render.live without its RedisError branch (the watch exits before Redis is back)."""
    server = RedisProc(tmp_path / "redis").start()
    env = dict(os.environ, DRAIN_REDIS_URL=server.url, DRAIN_RELAY="smtp://127.0.0.1:9", COLUMNS="160")
    main, sub = pty.openpty()
    watch = subprocess.Popen([sys.executable, "-m", "drain", command, "--watch", "0.2"], env=env,
                             stdin=subprocess.DEVNULL, stdout=sub, stderr=subprocess.PIPE)
    os.close(sub)
    screen = Screen(main)
    try:
        wait_for(lambda: screen.read().count(title) >= 3 or watch.poll() is not None, what="the watch refreshing")
        server.kill()
        wait_for(lambda: b"Redis unreachable since" in screen.read() or watch.poll() is not None,
                 what="the watch saying Redis is gone")
        assert watch.poll() is None, watch.communicate()[1]
        server = RedisProc(tmp_path / "redis", port=server.port).start()
        seen = len(screen.read())
        wait_for(lambda: screen.read()[seen:].count(title) >= 3 or watch.poll() is not None,
                 what="the watch refreshing again")
        assert watch.poll() is None, watch.communicate()[1]
        assert b"Redis unreachable" not in screen.read()[seen:].rsplit(title, 1)[-1]  # the note gone
        watch.send_signal(signal.SIGINT)
        _out, err = watch.communicate(timeout=30)
        assert watch.returncode == 0 and b"Traceback" not in err, err
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()
        os.close(main)
        server.stop()
