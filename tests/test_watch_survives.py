"""`drain status --watch`, `drain backlog --watch` and `drain log --follow` on a bad day: Redis restarting under them
(a crash, a failover) is said and waited out, not the end of the watch."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest
import redis

from drain.intake.api import Client
from drain.settings import Settings
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


class Lines:
    """A child's output pipe, read as far as it has written, without blocking."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.fd = pipe.fileno()
        os.set_blocking(self.fd, False)
        self.data = b""

    def read(self) -> bytes:
        try:
            while chunk := os.read(self.fd, 65536):
                self.data += chunk
        except BlockingIOError:
            pass
        return self.data


def _mail(n: int) -> bytes:
    return (f"From: a@src.example\r\nTo: u{n}@dest.example\r\nSubject: {n}\r\n"
            f"Message-ID: <{n}@src.example>\r\n\r\nhi\r\n").encode()


def test_log_follow_outlives_a_redis_restart(tmp_path: Path) -> None:
    """`drain log --follow` ended with "drain: error: Redis: Connection closed by server" when
    Redis restarted: the operator's tail of the delivery log was gone in the incident. Now it
    says so once and prints the events recorded after Redis is back. Mutant caught: log without
    _follow (reader.follow bare)."""
    server = RedisProc(tmp_path / "redis").start()
    settings = Settings(redis_url=server.url, relay="smtp://127.0.0.1:9")
    env = dict(os.environ, DRAIN_REDIS_URL=server.url, DRAIN_RELAY=settings.relay)
    follow = subprocess.Popen([sys.executable, "-m", "drain", "log", "--follow"], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = Lines(follow.stdout), Lines(follow.stderr)  # type: ignore[arg-type]
    try:
        client = redis.Redis(port=server.port)
        # Following: blocked in XREAD (it starts after the newest event it found, so mail sent
        # before that would not be shown).
        wait_for(lambda: any(c.get("cmd") == "xread" for c in client.client_list()), what="the follower waiting")
        before = Client(client, settings).enqueue(_mail(1))
        wait_for(lambda: f" {before} ".encode() in out.read() or follow.poll() is not None, what="the first event")
        client.close()
        server.kill()
        wait_for(lambda: b"Redis unreachable" in err.read() or follow.poll() is not None, what="the outage said")
        server = RedisProc(tmp_path / "redis", port=server.port).start()
        client = redis.Redis(port=server.port)
        wait_for(lambda: b"Redis answers again" in err.read() or follow.poll() is not None, what="Redis back")
        after = Client(client, settings).enqueue(_mail(2))
        wait_for(lambda: f" {after} ".encode() in out.read() or follow.poll() is not None, what="the event after")
        assert follow.poll() is None, err.read()
        assert b"Traceback" not in err.read() and len(err.read().splitlines()) == 2
        client.close()
    finally:
        follow.kill()
        follow.communicate()
        server.stop()
