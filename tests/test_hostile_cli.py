"""The drain command given numbers it cannot use: one line, a usage exit, no traceback."""

from __future__ import annotations

import pytest

from drain.settings import Settings
from tests.test_cli import drain


@pytest.mark.parametrize("args", [
    ("status", "--watch", "1e300"),
    ("backlog", "--watch", "1e19"),
])
def test_a_refresh_interval_too_large_to_sleep_is_a_usage_error(args: tuple[str, ...], settings: Settings) -> None:
    """A finite but huge --watch passed the option and then overflowed time.sleep (a
    traceback, exit 1) once the first screen was drawn."""
    result = drain(settings, *args)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "--watch" in err


@pytest.mark.parametrize("name", ["DRAIN_RELAY_TIMEOUT", "DRAIN_LEASE_TTL", "DRAIN_BATCH_SIZE"])
def test_a_finite_but_huge_number_setting_is_refused_at_start(name: str, settings: Settings) -> None:
    """DRAIN_RELAY_TIMEOUT=1e300 was taken, and then every delivery was deferred with
    'OverflowError: timestamp out of range' (the socket timeout); DRAIN_LEASE_TTL=1e300
    ended the worker with a Redis error that named no setting; DRAIN_BATCH_SIZE=10^20 failed
    every claim (the count of LPOP out of range), a traceback per job and no delivery."""
    huge = "1" + "0" * 20 if name == "DRAIN_BATCH_SIZE" else "1e300"
    result = drain(settings, "worker", "--burst", env={name: huge})
    err = result.stderr.decode()
    assert result.returncode == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("drain worker:")]
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in err, err
