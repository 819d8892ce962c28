"""Settings are declared once (drain/settings): the README's settings tables say the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drain.errors import ConfigError
from drain.settings import Durability, Settings, declared

README = Path(__file__).resolve().parent.parent / "README.md"
HEADER = "| variable | default | meaning |"


def readme_defaults(text: str) -> dict[str, str]:
    """Variable -> default cell (backticks dropped) of every row of the README's settings tables
    (the tables headed `| variable | default | meaning |`); DRAIN_SMTPD_* rows are skipped (a pointer)."""
    found: dict[str, str] = {}
    in_table = False
    for line in text.splitlines():
        if line.strip() == HEADER:
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        if not in_table or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = [n for n in re.findall(r"`(DRAIN_[A-Z0-9_]+\*?)`", cells[0]) if not n.endswith("*")]
        shown = cells[1].replace("`", "")
        values = shown.split(", ") if shown else [""]
        if len(values) == 1:
            values = values * len(names)
        assert len(values) == len(names), f"README row {line!r}: {len(names)} variables, {len(values)} defaults"
        for name, value in zip(names, values, strict=True):
            assert name not in found, f"{name} has two rows in the README"
            found[name] = value
    return found


def test_the_readme_tables_and_the_declarations_agree() -> None:
    documented = readme_defaults(README.read_text(encoding="utf-8"))
    declarations = {d.var.name: d.shown for d in declared(Settings)}
    assert sorted(set(declarations) - set(documented)) == [], "declared but not in the README's tables"
    assert sorted(set(documented) - set(declarations)) == [], "in the README's tables but not declared"
    differing = {name: (documented[name], shown) for name, shown in declarations.items() if documented[name] != shown}
    assert differing == {}, "README default vs declared default"


def test_each_setting_is_declared_once_with_a_doc_and_group() -> None:
    names = [d.var.name for d in declared(Settings)]
    assert len(names) == len(set(names))
    assert all(d.var.doc and "\n" not in d.var.doc for d in declared(Settings))
    assert {d.var.group for d in declared(Settings)} >= {"relay", "smtpd", "validation", "flow"}


def test_parsed_values_are_stored_parsed() -> None:
    s = Settings.from_env({"DRAIN_SMTPD_LISTEN": ":2600", "DRAIN_DURABILITY": " Replicas:2 ",
                           "DRAIN_RELAY_TIMEOUT": "5"})
    assert s.smtpd_listen == ("0.0.0.0", 2600)
    assert s.durability == Durability("replicas", 2) and str(s.durability) == "replicas:2"
    assert s.relay_timeout_s == 5.0
    assert Settings.from_env({}).with_(durability=Durability.parse("fsync")).durability.mode == "fsync"


@pytest.mark.parametrize(("env", "message"), [
    ({"DRAIN_BATCH_SIZE": "many"}, "DRAIN_BATCH_SIZE must be a whole number, got 'many'"),
    ({"DRAIN_BATCH_SIZE": "0"}, "DRAIN_BATCH_SIZE must be at least 1, got 0"),
    ({"DRAIN_LEASE_TTL": "0.1"}, "DRAIN_LEASE_TTL must be at least 0.5, got 0.1"),
    ({"DRAIN_BURST": "nan"}, "DRAIN_BURST must be a finite number, got 'nan'"),
    ({"DRAIN_RETRY_MAX": "soon"}, "DRAIN_RETRY_MAX must be a number, got 'soon'"),
    ({"DRAIN_DSN": "maybe"}, "DRAIN_DSN must be true or false, got 'maybe'"),
    ({"DRAIN_LOG_FORMAT": "xml"}, "DRAIN_LOG_FORMAT must be text or json, got 'xml'"),
    ({"DRAIN_SMTPD_TLS_CERT": "/c.pem"}, "DRAIN_SMTPD_TLS_CERT and DRAIN_SMTPD_TLS_KEY must be set together"),
    ({"DRAIN_SMTPD_AUTH_PASSWORD": "pw"}, "DRAIN_SMTPD_AUTH_USER and DRAIN_SMTPD_AUTH_PASSWORD must be set together"),
    ({"DRAIN_RELAY_CA_FILE": "/nonexistent.pem"}, "DRAIN_RELAY_CA_FILE is not a readable file: /nonexistent.pem"),
    ({"DRAIN_DURABILITY": "always"}, "DRAIN_DURABILITY must be none, fsync or replicas:N (N >= 1), got 'always'"),
    ({"DRAIN_SMTPD_LISTEN": "2526"}, "DRAIN_SMTPD_LISTEN must look like 127.0.0.1:2526 or [::1]:2526, got '2526'"),
])
def test_bad_values_get_their_one_line_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert str(caught.value) == message


def test_unset_and_blank_take_the_default_and_computed_defaults_fill_in() -> None:
    s = Settings.from_env({"DRAIN_BATCH_SIZE": "", "DRAIN_DSN": " ", "DRAIN_SMTPD_SMTPUTF8": "auto",
                           "USER": "ops", "DRAIN_HOSTNAME": ""})
    assert (s.batch_size, s.dsn, s.smtpd_smtputf8) == (100, False, None)
    assert s.actor.startswith("ops@") and "." in s.hostname
