"""A new operator's setup mistakes, found by trying them: a Redis URL whose database part is
not a number, a DRAIN_HOME drain cannot write in, a relay URL written without its scheme.
Each must be one line and a non-zero exit, and must not act on some other Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from drain.intake.api import Client
from drain.settings import Settings
from tests.chaos_kit import one_line
from tests.test_cli import drain


@pytest.mark.parametrize("path", ["/0x", "/l", "/2/3", "/0,garbage"])
def test_a_redis_url_whose_database_is_not_a_number_is_refused(path: str, client: Client,
                                                                settings: Settings) -> None:
    """redis-py reads a database it cannot parse as none: DRAIN_REDIS_URL=redis://host/0x
    (or /l for /1) queued into database 0, which may be another drain's, and "/2/3" went to
    database 23 (or failed: no such database); `drain enqueue` said it accepted the message.
    Now a usage error naming the URL, and nothing is queued anywhere. Mutant caught:
    client_for without the _DB_PATH check."""
    base = (settings.redis_url or "").rsplit("/", 1)[0]
    url = base + path
    result = drain(settings, "enqueue", "--from", "a@example.com", "--to", "b@example.org", "-",
                   stdin=b"Subject: x\r\n\r\nbody\r\n", env={"DRAIN_REDIS_URL": url})
    err = one_line(result)
    assert result.returncode == 2 and "database number" in err, err
    assert client.store.books().accepted == 0
    for db in (2, 3):
        other = redis.Redis.from_url(f"{base}/{db}")
        assert other.dbsize() == 0
        other.close()


@pytest.mark.parametrize("path", ["", "/", "/0"])
def test_a_redis_url_with_no_or_a_numeric_database_still_works(path: str, client: Client,
                                                              settings: Settings) -> None:
    url = (settings.redis_url or "").rsplit("/", 1)[0] + path
    result = drain(settings, "status", "--json", env={"DRAIN_REDIS_URL": url})
    assert result.returncode == 0, result.stderr


def test_a_drain_home_that_cannot_be_written_in_is_one_line(tmp_path: Path, settings: Settings) -> None:
    """With no DRAIN_REDIS_URL and a DRAIN_HOME drain cannot write in (here its lock file is a
    folder; /proc/1 or a read-only mount fail the same way), `drain status` ended in a
    FileNotFoundError traceback. Mutant caught: ensure_running without the OSError catch."""
    (tmp_path / "lock").mkdir()
    env = {"DRAIN_REDIS_URL": "", "DRAIN_HOME": str(tmp_path)}
    result = drain(settings, "status", env=env)
    lines = [line for line in result.stderr.decode().splitlines() if "no DRAIN_REDIS_URL" not in line]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr.decode() and "DRAIN_HOME" in lines[0], lines


@pytest.mark.parametrize("url", ["localhost:2525", "127.0.0.1:2525", "relay.example.com"])
def test_a_relay_url_without_its_scheme_says_so(url: str, client: Client, settings: Settings) -> None:
    """DRAIN_RELAY=localhost:2525 (the scheme forgotten) was refused as "must start with
    smtp://..., got 'localhost'" (urlsplit takes the host for the scheme), and 127.0.0.1:2525
    as "got ''". Now the error says the scheme is missing and how to write it. Mutant caught:
    RelayConfig.from_url without the "://" check."""
    result = drain(settings, "worker", "--burst", env={"DRAIN_RELAY": url})
    lines = [line for line in result.stderr.decode().splitlines() if not line.startswith("drain worker:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "no scheme" in lines[0] and "smtp://HOST:PORT" in lines[0], lines
