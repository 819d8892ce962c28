"""Settings with a bad value are refused at start-up in one line naming the setting, never later
in the middle of a run.

Found by setting each DRAIN_* variable to a bad value: DRAIN_HOSTNAME took anything. A name
with a space went out in every EHLO (a strict relay refuses it, so every message deferred and
the relay's breaker opened), and one with a line break made every delivery attempt fail inside
smtplib; `drain worker` started happily either way."""

from __future__ import annotations

from pathlib import Path

import pytest

from drain.errors import ConfigError
from drain.settings import Settings
from tests.test_cli import drain


@pytest.mark.parametrize("bad", ["bad host", "mail.example.com\r\nRSET", "-lead.example", "a..b", "[not-an-ip]",
                                 "x" * 64 + ".example", "höst.example"])
def test_a_bad_helo_name_is_refused_in_one_line(bad: str) -> None:
    with pytest.raises(ConfigError, match="DRAIN_HOSTNAME"):
        Settings.from_env({"DRAIN_HOSTNAME": bad})


@pytest.mark.parametrize("good", ["mail.example.com", "relay-1.example.org.", "localhost", "[192.0.2.1]",
                                  "[IPv6:2001:db8::1]"])
def test_good_helo_names_are_kept_as_given(good: str) -> None:
    assert Settings.from_env({"DRAIN_HOSTNAME": good}).hostname == good


def test_worker_refuses_a_bad_helo_name_at_start(settings: Settings) -> None:
    result = drain(settings, "worker", "--burst", env={"DRAIN_HOSTNAME": "bad host"})
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "DRAIN_HOSTNAME" in lines[0], lines


def test_a_relay_ca_file_that_is_not_pem_is_refused_at_start(settings: Settings, tmp_path: Path) -> None:
    """It was taken, then `drain worker` died with an ssl.SSLError traceback once connected."""
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("this is not a certificate\n")
    with pytest.raises(ConfigError, match="DRAIN_RELAY_CA_FILE"):
        Settings.from_env({"DRAIN_RELAY_CA_FILE": str(not_pem)})
    result = drain(settings, "worker", "--burst", env={"DRAIN_RELAY_CA_FILE": str(not_pem)})
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "DRAIN_RELAY_CA_FILE" in lines[0], lines


@pytest.mark.parametrize(("env", "named"), [
    ({"DRAIN_RETRY_MAX": "1"}, "DRAIN_RETRY_MAX"),  # below the default first retry, 300 s
    ({"DRAIN_RETRY_FIRST": "5000"}, "DRAIN_RETRY_MAX"),  # above the default longest gap, 4000 s
    ({"DRAIN_BREAKER_MAX": "10"}, "DRAIN_BREAKER_MAX"),  # below the default cool-down, 60 s
])
def test_a_longest_wait_below_the_first_is_refused(env: dict[str, str], named: str) -> None:
    """DRAIN_RETRY_MAX=1 was taken and silently made every retry come after 1 s, hammering the
    relay, whatever DRAIN_RETRY_FIRST said."""
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)
    Settings.from_env({**env, "DRAIN_RETRY_FIRST": "1", "DRAIN_RETRY_MAX": "6000",
                       "DRAIN_BREAKER_COOLDOWN": "1", "DRAIN_BREAKER_MAX": "900"})


@pytest.mark.parametrize("url", ["smtps://user:top/secret@relay.example.com",
                                 "smtps://user:top#secret@relay.example.com",
                                 "smtps://user:top?secret@relay.example.com:465"])
def test_a_relay_url_that_cannot_be_read_never_shows_its_password(settings: Settings, url: str) -> None:
    """A password with / # or ? not percent-encoded made the URL parser read part of it as the
    port, and its error ('Port could not be cast to integer value as 'top'') was passed on."""
    result = drain(settings, "worker", "--burst", env={"DRAIN_RELAY": url})
    assert result.returncode != 0
    err = result.stderr.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "relay URL" in lines[0], lines
    assert "top" not in err and "secret" not in err, err
