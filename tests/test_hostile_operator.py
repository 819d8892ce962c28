"""An operator on a bad day: odd arguments, hostile names, flows while mail waits. Each
case was a break found by trying it (see the test's docstring)."""

from __future__ import annotations

import pytest

from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from tests.chaos_kit import one_line
from tests.test_cli import drain


@pytest.mark.parametrize("args", [
    ("pause", "--tenant", ""),
    ("resume", "--tenant", "has space"),
    ("tenant", "set", "ev\x1b[2Jil", "--weight", "2"),
    ("rate", "set", "5/s", "--tenant", "x" * 200),
])
def test_a_name_that_cannot_be_a_tenant_is_a_usage_error(args: tuple[str, ...], client: Client,
                                                         settings: Settings) -> None:
    """A tenant name that cannot be one (empty, a space, a control character, too long)
    exited 1, as if drain had failed, where an unknown tenant exits 2: it is the operator's
    typo either way (the contract's usage error)."""
    client.enqueue(b"Subject: x\r\n\r\nbody\r\n", sender="a@example.com", recipients=["b@example.org"])
    result = drain(settings, *args)
    err = one_line(result)
    assert result.returncode == 2, err
    assert "tenant" in err and "\x1b" not in err


@pytest.mark.parametrize("name", ["*.example.com", "example.com/24", "ex%41mple.com", "exa!mple.com",
                                  "x_y.example.com"])
def test_a_route_for_a_domain_no_recipient_can_have_is_refused_and_changes_nothing(
        name: str, client: Client, settings: Settings) -> None:
    """`drain route set '*.example.com' URL` (the wildcard other MTAs use) was stored and
    listed, and matched nothing: recipient domains are letters, digits and hyphens, so the
    subdomains' mail went by the default relay, silently. Mutant caught: check_name without
    the hostname test."""
    result = drain(settings, "route", "set", name, "smtp://127.0.0.1:2600")
    err = one_line(result)
    assert result.returncode == 2, err
    if name.startswith("*."):
        assert "'.example.com'" in err  # the form that takes every subdomain
    assert client.redis.hgetall(keys.ROUTES) == {}
    assert drain(settings, "route", "set", ".example.com", "smtp://127.0.0.1:2600").returncode == 0


def test_a_route_stored_before_the_check_can_still_be_deleted(client: Client, settings: Settings) -> None:
    """A '*.example.com' route an older drain stored must not be stuck for good."""
    client.redis.hset(keys.ROUTES, "domain:*.example.com", '["smtp://127.0.0.1:2600"]')
    result = drain(settings, "route", "delete", "*.example.com")
    assert result.returncode == 0, result.stderr
    assert client.redis.hgetall(keys.ROUTES) == {}


@pytest.mark.parametrize("option", ["--id", "--message-id", "--sender"])
def test_trace_with_an_empty_selector_is_a_usage_error_not_every_message(
        option: str, client: Client, settings: Settings) -> None:
    """`drain trace --id "$ID"` with ID unset traced every message, exit 0: a script asking
    "did this one go out?" got the states of all of them. Mutant caught: the empty check
    removed from cli/trace.py."""
    client.enqueue(b"Subject: x\r\n\r\nbody\r\n", sender="a@example.com", recipients=["b@example.org"])
    result = drain(settings, "trace", option, "", "--json")
    err = one_line(result)
    assert result.returncode == 2 and option in err, err
    assert result.stdout == b""


@pytest.mark.parametrize("args", [
    ("delete", "--domain", "example.org", "--sender", ""),
    ("quarantine", "delete", "--domain", "example.org", "--sender", ""),
    ("quarantine", "release", "--reason", "", "--domain", "example.org"),
    ("quarantine", "rule", "add", "--domain", "example.org", "--sender", ""),
])
def test_an_empty_selector_beside_another_is_a_usage_error_not_a_wider_action(
        args: tuple[str, ...], client: Client, settings: Settings) -> None:
    """`drain delete --domain example.org --sender "$SENDER"` with SENDER unset deleted all
    of example.org's mail: the empty glob selected nothing and was dropped, the domain alone
    was left. So did the quarantine filters and rules. Mutant caught: options.nonempty
    returning the value unchecked."""
    for _ in range(3):
        client.enqueue(b"Subject: x\r\n\r\nbody\r\n", sender="a@example.com", recipients=["b@example.org"])
    before = client.store.books()
    result = drain(settings, *args)
    err = one_line(result)
    assert result.returncode == 2 and "is empty" in err, err
    assert client.store.books() == before
    assert client.redis.exists(keys.RULES) == 0


@pytest.mark.parametrize("args", [
    ("rate", "set", "0.0000000000000000000000001/h"),
    ("rate", "set", "0.00001/h", "--domain", "example.org"),
    ("rate", "set", "0.0000001/s", "--tenant", "example.com"),
])
def test_a_rate_slower_than_one_a_day_is_refused(args: tuple[str, ...], client: Client, settings: Settings) -> None:
    """`drain rate set 0.0000000000000000000000001/h` was stored; then every claim failed in
    the claim script ('ERR value is not an integer or out of range': the booked send time's
    lifetime), a traceback per job, a message left in flight, and an ETA of 1e29 s. Mutant
    caught: parse_rate without the SLOWEST check."""
    client.enqueue(b"Subject: x\r\n\r\nbody\r\n", sender="a@example.com", recipients=["b@example.org"])
    result = drain(settings, *args)
    err = one_line(result)
    assert result.returncode == 2 and "one message a day" in err, err
    assert client.redis.exists(keys.RATE, keys.DOMAIN_RATES, keys.TENANT_RATES) == 0
    assert drain(settings, "rate", "set", "1/h").returncode == 0
