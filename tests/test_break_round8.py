"""Breaks found in round 8 of trying drain as a careless or hostile user and as a new operator,
each turned into a test. Each docstring says what happened before the fix and the mutant it catches."""

from __future__ import annotations

import pytest

from drain.errors import ConfigError
from drain.settings import Settings, declared
from drain.settings.values import Durability
from tests.test_cli import drain

ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x660 + i) for i in range(10)))
AR12 = "12".translate(ARABIC_INDIC)


def _numeric_settings() -> list[tuple[str, str]]:
    """(variable, its default written in Arabic-Indic digits) for every number setting."""
    found = []
    for d in declared(Settings):
        default = 2048 if d.field == "smtpd_max_bytes" else d.default
        if isinstance(default, int | float) and not isinstance(default, bool):
            found.append((d.var.name, str(default).translate(ARABIC_INDIC)))
    return found


@pytest.mark.parametrize(("name", "value"), _numeric_settings())
def test_a_number_setting_in_another_scripts_digits_is_refused(name: str, value: str) -> None:
    """DRAIN_BATCH_SIZE=١٢ (Arabic-Indic digits) was taken as 12, as int() and float() read any
    script's digits. Mutant caught: the isascii() check in values._bounded removed."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
    ascii_value = value.translate({0x660 + i: str(i) for i in range(10)})
    Settings.from_env({name: ascii_value})  # the same number in ASCII digits is fine


@pytest.mark.parametrize(("name", "value"), [("DRAIN_SMTPD_LISTEN", ":²"), ("DRAIN_SMTPD_LISTEN", ":٢٥٢٦"),
                                             ("DRAIN_DURABILITY", "replicas:²"), ("DRAIN_DURABILITY", "replicas:٢")])
def test_a_port_or_replica_count_in_other_digits_is_a_one_line_error(name: str, value: str, settings: Settings) -> None:
    """DRAIN_SMTPD_LISTEN=:² and DRAIN_DURABILITY=replicas:² passed str.isdigit() and then
    int() raised ValueError: a traceback at every command (and ':٢٥٢٦' listened on 2526).
    Mutant caught: ascii_digits() back to str.isdigit() in parse_listen / parse_durability."""
    result = drain(settings, "status", env={name: value})
    assert result.returncode == 2, result.stderr
    assert result.stderr.decode().count("\n") == 1 and b"Traceback" not in result.stderr
    assert name.encode() in result.stderr
    assert Durability.parse("replicas:2") == Durability("replicas", 2)


@pytest.mark.parametrize("args", [("rate", "set", f"{AR12}/s"), ("hold", "--older-than", f"{AR12}m"),
                                  ("trace", "--since", f"{AR12}m"), ("trace", "--since", AR12),
                                  ("log", "--since", "12345".translate(ARABIC_INDIC))])
def test_rates_durations_and_times_in_other_digits_are_usage_errors(args: tuple[str, ...], settings: Settings,
                                                                     rclient: object) -> None:
    """`rate set 12/s` in Arabic-Indic digits set 12/s, `--older-than 12m` selected mail older than 12 minutes and
    `--since 12` meant 12 s after 1970: the regexes' \\d takes any script's digits.
    Mutant caught: re.ASCII dropped from ratelimit._RATE, select._DURATION or when._AGO/the
    unix-seconds match."""
    result = drain(settings, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.decode().count("\n") == 1 and b"Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["redis+sentinel://127.0.0.1:٢٦/mymaster", "redis+sentinel://127.0.0.1:26379/m/٣"])
def test_a_sentinel_url_with_other_digits_is_refused_as_written(url: str, settings: Settings) -> None:
    """A Sentinel port written '٢٦' was asked on port 26 (and a db '٣' was db 3): str.isdigit()
    and int() take any script's digits. Mutant caught: the isascii() checks in SentinelUrl.parse removed."""
    result = drain(settings, "status", env={"DRAIN_REDIS_URL": url})
    assert result.returncode == 2 and b"Traceback" not in result.stderr, result.stderr
    assert result.stderr.decode().count("\n") == 1
    assert b"sentinel" in result.stderr
