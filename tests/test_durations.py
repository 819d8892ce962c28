"""One duration format for the page and the admin scripts (drain/durations.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from drain.durations import human
from drain.observe import page as statuspage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import _drain_cmd


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "—"), (0, "under 1 s"), (0.4, "under 1 s"), (1, "1 s"), (59.4, "59 s"), (60, "1 min"),
    (3599, "59 min"), (3600, "1 h"), (3900, "1 h 05 min"), (86399, "23 h 59 min"), (86400, "1 d"),
    (90000, "1 d 1 h"),
])
def test_human(seconds: float | None, text: str) -> None:
    assert human(seconds) == text


def test_page_and_scripts_use_the_one_helper() -> None:
    for seconds in (None, 0.2, 42, 600, 3900, 200000):
        assert statuspage.dur(seconds) == human(seconds)
        assert _drain_cmd.duration(seconds) == human(seconds, none="-")
