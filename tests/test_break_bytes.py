"""Message bytes a careless or hostile producer hands drain, found by trying them: what is
judged must be what would be sent. Each docstring says what happened before the fix."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.settings import Settings
from tests.test_cli import drain

HEADER = (b"From: a@example.com\r\nTo: b@example.org\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
          b"Message-ID: <m1@example.com>\r\nSubject: hi\r\n\r\nbody\r\n")
MBOX_LINE = b"From a@example.com Mon Nov 30 10:00:00 2026\r\n"


def test_a_message_led_by_an_mbox_from_line_is_quarantined_not_relayed(
        client: Client, relay: Sink, work: Callable[..., bool], settings: Settings, tmp_path: Path) -> None:
    """A single message file that still starts with its mbox "From " line (queued without
    --mbox) was judged ok (the header scan skipped the line) and sent to the relay with that
    line first: a relay reads it as the end of the header, so From, To and Subject arrived as
    body text. Now header.malformed naming line 1, in `drain check` and in the worker, and the
    relay gets nothing. Mutant caught: _header_lines skipping the line without a finding."""
    path = tmp_path / "one.eml"
    path.write_bytes(MBOX_LINE + HEADER)
    checked = json.loads(drain(settings, "check", "--json", str(path)).stdout)
    assert checked["verdict"] == "quarantine" and checked["reasons"] == ["header.malformed"], checked
    assert checked["findings"][0]["detail"].startswith("line 1: an mbox 'From ' line"), checked
    client.enqueue(MBOX_LINE + HEADER)
    client.enqueue(HEADER)
    work()
    books = client.store.books()
    assert books.quarantined == 1 and books.delivered == 1, books
    assert [m.data.startswith(b"From: a@example.com") for m in relay.messages] == [True]
