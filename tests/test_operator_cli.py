"""The `drain` command as a new operator meets it: usage errors exit 2 with one line and
change nothing (CONTRACT.md), whatever the command."""

from __future__ import annotations

import pytest

from drain.intake.api import Client
from drain.settings import Settings
from tests.conftest import SEEDS
from tests.test_cli import drain

BAD = (b"From: app@example.com\r\nTo: user@example.org\r\nSubject: nul\r\n"
       b"Message-ID: <nul@example.com>\r\nDate: Mon, 30 Nov 2026 00:00:00 +0000\r\n\r\nbad\x00byte\r\n")


@pytest.mark.parametrize("action", ["release", "delete"])
def test_quarantine_action_without_ids_or_filter_is_a_usage_error(
        action: str, client: Client, settings: Settings, work: object) -> None:
    client.enqueue(BAD)
    work()  # type: ignore[operator]
    assert client.store.books().quarantined == 1
    result = drain(settings, "quarantine", action)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "--reason" in lines[0], lines
    assert client.store.books().quarantined == 1  # nothing changed


def test_check_with_a_missing_file_is_a_usage_error_before_any_verdict(settings: Settings) -> None:
    """`drain check good.eml /nonexistent` printed the first verdict, then exited 1; enqueue
    checks every input first and exits 2. A script reading the JSON lines got half an answer."""
    good = sorted((SEEDS / "good").glob("*.eml"))[0]
    result = drain(settings, "check", "--json", str(good), "/nonexistent/mail.eml")
    assert result.returncode == 2
    assert result.stdout == b""
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "/nonexistent/mail.eml" in lines[0], lines
