"""Hostile text where drain shows it to people and to machines: recipient domains written by
whoever sent the mail, on the status page and in the metrics; `drain` typed with no command.
Each docstring says what was seen before the fix."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from drain.intake.api import Client
from drain.observe import metrics
from drain.observe.http import StatusServer
from drain.settings import Settings
from tests.test_cli import drain
from tests.test_metrics import parse
from tests.test_web import fetch, serve  # noqa: F401 (serve: the fixture)

BODY = b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n"
# Recipient domains the API takes (the worker quarantines them later): until then they are
# in the backlog's shape, on the page and in the metrics.
ESCAPE = "y@\x1b]0;pwned\x07\x1b[2J.org"
BIDI = "v@\u202egro.live"
NEWLINE = "w@a\nb.org"
LONG_A = "q@" + "q" * 3000 + ".org"
LONG_B = "q@" + "q" * 3000 + ".net"


@pytest.fixture
def hostile_backlog(client: Client) -> Iterator[Client]:
    for rcpt in (ESCAPE, BIDI, NEWLINE, LONG_A, LONG_B):
        client.enqueue(BODY, sender="a@example.com", recipients=[rcpt])
    yield client


def test_the_status_page_shows_controls_in_domains_as_escapes_and_cuts_long_ones(
        hostile_backlog: Client, serve: Callable[..., StatusServer]) -> None:  # noqa: F811
    """The page's "Queued by destination" table wrote recipient domains HTML-escaped but with
    their controls raw: an ESC sequence, a newline, and U+202E, which makes a browser show
    "\u202egro.live" as "evil.org"; a 3,000-character domain was written whole. Now controls
    show as escapes and a value stops at SHOWN_CHARS. Mutant caught: markup.esc without
    `visible` (raw controls), without the cut (the long domain)."""
    page = fetch(serve().url).text
    for raw in ("\x1b", "\x07", "\u202e", "a\nb.org"):
        assert raw not in page, repr(raw)
    assert "\\x1b]0;pwned\\x07\\x1b[2j.org" in page and "\\u202egro.live" in page and "a\\nb.org" in page
    assert "q" * 400 not in page and "q" * 250 in page


def test_metrics_labels_from_mail_are_printable_short_and_distinct(hostile_backlog: Client) -> None:
    """drain_backlog_messages{domain=...} carried the ESC sequence and U+202E raw (a `curl` of
    /metrics on a terminal ran them) and 3,000-character label values. Now a label from mail
    that is not short and printable is shown with escapes, cut, and ended by a hash, so the two
    long domains sharing their start stay two series (a repeated series fails the whole
    scrape). Mutants caught: _label returning the text as it is; _label without the hash."""
    text = metrics.exposition(metrics.registry(metrics.live(hostile_backlog.store))).decode()
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    domains = [dict(labels)["domain"] for (name, labels) in parse(text) if name == "drain_backlog_messages"]
    assert len(domains) == len(set(domains)) == 5, domains
    assert all(len(d) <= metrics.LABEL_CHARS + 11 and d.isprintable() for d in domains), domains
    assert any(d.startswith("\\x1b]0;pwned") for d in domains) and "a\\nb.org" in " ".join(domains)


@pytest.mark.parametrize("args", [(), ("quarantine",), ("quarantine", "rule"), ("deferred",), ("rate",)])
def test_a_command_group_without_its_command_shows_its_help(args: tuple[str, ...], settings: Settings) -> None:
    """`drain` alone, the first thing a new operator types, printed its whole help folded into
    one "error:" line (and, past the error's length limit, cut); so did `drain quarantine`.
    Now the help as written, on standard error, with the usage exit 2. Mutant caught: main
    without the NoArgsIsHelpError branch."""
    result = drain(settings, *args)
    err = result.stderr.decode()
    assert result.returncode == 2 and result.stdout == b"", err
    assert err.startswith("Usage: drain") and "\nCommands:\n" in err and "error:" not in err, err
