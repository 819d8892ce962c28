"""Text written by senders and relays reaches the operator's terminal only as inert text:
no rich markup interpreted (a `[/x]` must not stop a command), no escape sequences, C1
controls or bidi overrides. Each command runs as a real process on the test Redis."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from drain.cli.terminal import cell, safe
from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.intake.api import Client, Submission
from drain.settings import Settings
from drain.store import keys
from tests.test_cli import drain

# What a terminal would act on: C0 (tab and newline aside), DEL, C1, bidi controls.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

OSC_TITLE = "\x1b]0;pwned\x07"
OSC8_LINK = "\x1b]8;;https://evil.example/\x1b\\click here\x1b]8;;\x1b\\"
HOSTILE = f"{OSC_TITLE} \x1b[2J\x1b[H {OSC8_LINK} \u202egnp.exe \x9b31m [bold]loud[/bold] [/x]"
SENDER = "[/x]@example.com"
DOMAIN = "[/b]x.example"
REPLY = f"451 4.3.0 [bold]later[/x] {OSC_TITLE} \u202eevil \x9b2J"


def hostile_message(n: int) -> bytes:
    return (f"From: [/x] <attacker{n}@example.com>\r\nTo: victim@example.org\r\nSubject: {HOSTILE}\r\n"
            f"Message-ID: <hostile-{n}@example.com>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            f"X-Note: {OSC_TITLE}[red]x[/red]\r\n\r\nbody {HOSTILE}\r\n").encode()


def shown(result: object) -> str:
    """A finished command's stdout and stderr, checked: no crash, nothing a terminal acts on."""
    out = result.stdout.decode("utf-8")  # type: ignore[attr-defined]
    err = result.stderr.decode("utf-8")  # type: ignore[attr-defined]
    assert "Traceback" not in err and "MarkupError" not in err, err
    for text in (out, err):
        found = UNSAFE.search(text)
        assert found is None, f"{found.group()!r} reached the terminal in {text!r}"
    return out + err


def test_safe_makes_controls_visible_and_leaves_text_alone() -> None:
    assert safe("plain ascii, [/x] and ünïcödé") == "plain ascii, [/x] and ünïcödé"
    assert safe(OSC_TITLE) == "\\x1b]0;pwned\\x07"
    assert safe("a\u202eb\u2066c\x9bd\x7fe\nf\tg") == "a\\u202eb\\u2066c\\x9bd\\x7fe\\nf\\tg"
    assert safe("tag \U000e0041") == "tag \\U000e0041"
    assert UNSAFE.search(safe(HOSTILE)) is None
    assert cell("[/x]").plain == "[/x]" and not cell("[bold]x[/bold]").spans


@pytest.fixture
def quarantined(client: Client, work: Callable[..., bool]) -> list[str]:
    """Hostile messages in quarantine: a markup sender, escapes and bidi in headers and body."""
    ids = client.enqueue_many([Submission(hostile_message(i), SENDER, (f"v{i}@{DOMAIN}", "ok@example.org"))
                               for i in range(2)]).ids
    work()
    assert client.store.books().quarantined == 2
    return ids


def test_quarantine_list_and_show(settings: Settings, quarantined: list[str]) -> None:
    listed = drain(settings, "quarantine", "list")
    assert listed.returncode == 0, listed.stderr
    text = shown(listed)
    assert SENDER in text and DOMAIN in text  # markup shown literally
    assert drain(settings, "quarantine", "list", "--json").returncode == 0

    show = drain(settings, "quarantine", "show", quarantined[0])
    assert show.returncode == 0, show.stderr
    text = shown(show)
    assert SENDER in text and "\\x1b]0;pwned\\x07" in text and "\\u202egnp.exe" in text
    assert "[red]x[/red]" in text


def test_check_shows_evidence_without_escapes(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "hostile.eml"
    path.write_bytes(hostile_message(1))
    result = drain(settings, "check", str(path))
    assert result.returncode == 0, result.stderr
    assert "\\x1b]0;pwned" in shown(result)


def test_enqueue_error_names_a_hostile_file_safely(client: Client, settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / f"{OSC_TITLE}[bold].eml"
    empty.write_bytes(b"")
    result = drain(settings, "enqueue", str(empty))
    assert result.returncode == 1
    assert "rejected" in shown(result)


def test_backlog_status_and_rate_show_with_hostile_domains(client: Client, settings: Settings) -> None:
    ratelimit.pause(client.redis)  # the mail stays queued, by its hostile recipient domain
    client.enqueue_many([Submission(synthetic(i), "a@example.com", (f"u{i}@{DOMAIN}",)) for i in range(3)])
    # Nothing read from Redis is trusted: a breaker and a domain rate under hostile names.
    client.redis.hset(keys.BREAKER_OPEN, f"{OSC_TITLE}[/x].example", time.time() + 600)
    ratelimit.set_domain(client.redis, f"{OSC_TITLE}[/i].example", 5.0)

    backlog = drain(settings, "backlog")
    assert backlog.returncode == 0, backlog.stderr
    assert DOMAIN in shown(backlog)
    status = drain(settings, "status")
    assert status.returncode == 0, status.stderr
    assert "\\x1b]0;pwned\\x07[/x].example" in shown(status)
    rates = drain(settings, "rate", "show")
    assert rates.returncode == 0, rates.stderr
    assert "[/i].example" in shown(rates)


def test_deferred_list_and_status_with_a_hostile_relay_reply(client: Client, settings: Settings, relay: Sink,
                                                             work: Callable[..., bool]) -> None:
    relay.set_policy(data_policy=lambda _i, _m: REPLY)
    client.enqueue(synthetic(1))
    work()
    assert client.store.books().deferred == 1
    assert "\x1b" in (client.redis.hget(keys.message(client.store.client.zrange(keys.DEFERRED, 0, 0)[0].decode()),
                                        "last") or b"").decode()  # the reply reached Redis as sent

    listed = drain(settings, "deferred", "list")
    assert listed.returncode == 0, listed.stderr
    text = shown(listed)
    assert "[bold]later[/x]" in text and "\\x1b]0;pwned" in text
    status = drain(settings, "status")
    assert status.returncode == 0, status.stderr
    shown(status)
