"""Breaks left over from the last round of trying drain as a careless or hostile operator:
a selector naming no reason code, a relay URL holding CR/LF, a 70 KB address quoted whole in
an error, a rate with no upper bound. Each docstring says what happened before the fix."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from tests.chaos_kit import one_line
from tests.conftest import seed
from tests.test_cli import drain


def _one_quarantined(client: Client, work: Callable[..., bool]) -> str:
    nul = dict(seed("bad"))["body_nul-byte.eml"]
    msg_id = client.enqueue(nul)
    work()
    assert client.store.books().quarantined == 1
    return msg_id


@pytest.mark.parametrize("command", ["delete", "release", "list"])
@pytest.mark.parametrize("reason", ["nosuch", "body.nul", "header", "nosuch."])
def test_a_reason_selector_naming_no_known_code_is_a_usage_error(
        command: str, reason: str, client: Client, work: Callable[..., bool], settings: Settings) -> None:
    """`drain quarantine delete --reason nosuch` said "deleted 0 message(s)" and exited 0, as
    if the work were done: a typo of a code (or a code without its prefix's dot) selected
    nothing, silently. Now a usage error naming the known codes, and nothing changes. Mutant
    caught: filter_options' --reason callback back to `nonempty` alone."""
    _one_quarantined(client, work)
    before = client.store.books()
    result = drain(settings, "quarantine", command, "--reason", reason)
    err = one_line(result)
    assert result.returncode == 2, err
    assert "unknown reason code" in err and "body.nul-byte" in err and "store.corrupt" in err, err
    assert client.store.books() == before


def test_a_known_code_or_prefix_still_selects_in_any_case(client: Client, work: Callable[..., bool],
                                                          settings: Settings) -> None:
    """The check lets every real selector through: a code, a prefix ending in '.', in any case."""
    msg_id = _one_quarantined(client, work)
    for reason in ("body.nul-byte", "body.", "BODY.NUL-BYTE"):
        result = drain(settings, "quarantine", "delete", "--reason", reason, "--dry-run", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["ids"] == [msg_id]


@pytest.mark.parametrize("url", ["smtp://h%0d%0a:25", "smtp://h\r\nX:25", "smtp://relay\t.example:25",
                                 "smtp://relay.example:25\n", "smtp://re lay.example:25"])
def test_a_relay_url_with_control_characters_is_refused(url: str, client: Client, settings: Settings) -> None:
    """`drain route set example.com 'smtp://h\\r\\nX:25'` was stored as given while urlsplit
    dropped the CR/LF (the relay was listed as smtp://hx:25); "h%0d%0a" was stored as a host
    no resolver takes, and each delivery to it deferred. Both are refused now, as a route or
    a fallback, and nothing is stored. Mutants caught: RelayConfig.from_url without the
    printable check (raw controls), without the host check (percent-encoded)."""
    for args in (("route", "set", "example.com", url),
                 ("route", "set", "example.com", "smtp://127.0.0.1:2525", "--fallback", url)):
        result = drain(settings, *args)
        err = one_line(result)
        assert result.returncode == 2, err
        assert "bad relay URL" in err and "\r" not in err, err
    assert client.redis.exists(keys.ROUTES) == 0


def test_drain_relay_with_cr_lf_stops_a_worker_at_start(client: Client, settings: Settings) -> None:
    """DRAIN_RELAY with a CR/LF in its host started a worker that delivered to another host
    than the one configured (urlsplit drops them); now the start fails, one line, exit 2."""
    client.enqueue(b"Subject: x\r\n\r\nbody\r\n", sender="a@example.com", recipients=["b@example.org"])
    result = drain(settings, "worker", "--burst", env={"DRAIN_RELAY": "smtp://127.0.0.1\r\n:2525"})
    lines = [line for line in result.stderr.decode().splitlines() if not line.startswith("drain worker:")]
    assert result.returncode == 2 and len(lines) == 1 and "bad relay URL" in lines[0], result.stderr
    assert client.store.books().ready == 1


def test_a_huge_address_is_clipped_in_its_error(client: Client, settings: Settings) -> None:
    """`drain enqueue --to <70 KB address>` printed the whole address in its error line (and
    the validator's message after it). Now the address is cut to its first characters with a
    count of the rest. Mutant caught: address_value quoting the value whole."""
    huge = "a" * 70_000 + "@example.com"
    result = drain(settings, "enqueue", "--to", huge, "-", stdin=b"Subject: x\r\n\r\nbody\r\n")
    err = one_line(result)
    assert result.returncode == 2, err
    assert len(err) < 500 and "more characters" in err and "--to" in err, err[:600]
    assert client.store.books().accepted == 0


def test_any_error_line_is_cut_to_a_bounded_length(settings: Settings) -> None:
    """click's own usage errors quote what was typed: a 7,000-character option name came back
    whole. Every error line now stops at ERROR_CHARS. Mutant caught: render.fail without clip."""
    result = drain(settings, "--" + "x" * 7000)
    err = one_line(result)
    assert result.returncode == 2 and len(err) < 1100 and "more characters" in err, err[:1200]


@pytest.mark.parametrize("extra", [(), ("--domain", "example.org"), ("--tenant", "example.com")])
@pytest.mark.parametrize("rate", ["99999999999999999999999/s", "1000001/s", "3600000001/h"])
def test_a_rate_past_a_million_a_second_is_refused(rate: str, extra: tuple[str, ...], client: Client,
                                                   settings: Settings) -> None:
    """`drain rate set 99999999999999999999999/s` was stored and shown as 1e+23/s: no bound
    above, so a slip of the keyboard was a rate no relay takes, shown as if it were one. Now
    a usage error pointing at 'unlimited'; 1000000/s is the fastest taken. Mutant caught:
    parse_rate without the FASTEST check."""
    client.enqueue(b"Subject: x\r\n\r\nbody\r\n", sender="a@example.com", recipients=["b@example.org"])
    result = drain(settings, "rate", "set", rate, *extra)
    err = one_line(result)
    assert result.returncode == 2 and "unlimited" in err, err
    assert client.redis.exists(keys.RATE, keys.DOMAIN_RATES, keys.TENANT_RATES) == 0
    assert drain(settings, "rate", "set", "1000000/s", *extra).returncode == 0


@pytest.mark.parametrize("args", [("breaker", "close", "nosuch.example.org"),
                                  ("route", "delete", "nosuch.example.org")])
def test_nothing_to_close_or_delete_is_a_drain_error_line(args: tuple[str, ...], client: Client,
                                                         settings: Settings) -> None:
    """`drain breaker close D` and `drain route delete D` with nothing on record: one line with
    drain's own prefix, exit 1, as every other error. Mutant caught: the bare `error:` echo."""
    result = drain(settings, *args)
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr.decode().splitlines() == [result.stderr.decode().strip()]
    assert result.stderr.startswith(b"drain: error: no "), result.stderr
