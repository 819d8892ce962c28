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
