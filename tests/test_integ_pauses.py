"""A tenant's pause is a pause like the others: `drain pause list` shows it with its reason,
the audit log has it, and hostile text in the tenant's name or the reason is shown inert."""

from __future__ import annotations

import json
from collections.abc import Callable

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from tests.test_cli import drain

TENANT = "[bold]acme[/bold]"
REASON = "bad\x1b[31mRED\x1b[0m\r\nFAKE LINE [red]markup[/red]"


def _out(settings: Settings, *args: str) -> tuple[int, str, str]:
    done = drain(settings, *args)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def test_a_tenant_pause_is_listed_and_audited_with_its_reason(client: Client, relay: Sink,
                                                              work: Callable[..., bool], settings: Settings) -> None:
    client.enqueue(synthetic(1), recipients=["a@x.example.org"], tenant=TENANT)
    assert _out(settings, "pause", "--tenant", TENANT, "--reason", REASON)[0] == 0
    work()
    assert relay.messages == []  # paused: nothing went

    rows = json.loads(_out(settings, "pause", "list", "--json")[1])
    assert [(r["scope"], r["name"], r["reason"]) for r in rows] == [("tenant", TENANT, REASON)]
    code, text, _err = _out(settings, "pause", "list")
    assert code == 0 and "tenant" in text and TENANT in text and "FAKE LINE" in text
    assert "\x1b" not in text and "\r" not in text and text.count("\n") == 1, repr(text)
    audit = _out(settings, "audit", "--json")[1]
    assert '"pause"' in audit and "tenant" in audit, audit

    assert _out(settings, "resume", "--tenant", TENANT, "--reason", "done")[0] == 0
    assert json.loads(_out(settings, "pause", "list", "--json")[1]) == []
    assert '"resume"' in _out(settings, "audit", "--json")[1]
    work()
    assert [list(m.recipients) for m in relay.messages] == [["a@x.example.org"]]


def test_pausing_an_unknown_tenant_notes_and_audits_nothing(client: Client, settings: Settings) -> None:
    code, out, err = _out(settings, "pause", "--tenant", "nobody", "--reason", "x")
    assert code == 2 and out == "" and err.count("\n") == 1 and "unknown tenant" in err
    r = client.redis
    assert not r.exists(keys.PAUSES) and not r.exists(keys.AUDIT) and not r.exists(keys.PAUSED_TENANTS)


def test_trace_says_quarantined_after_an_operator_hold_as_show_and_status_do(
        client: Client, settings: Settings) -> None:
    client.enqueue(synthetic(1), recipients=["a@x.example.org"], tenant=TENANT)
    code, _out_text, _err = _out(settings, "hold", "--domain", "x.example.org", "--reason", REASON)
    assert code == 0
    doc = json.loads(_out(settings, "trace", "--id", "1", "--json")[1])
    shown = json.loads(_out(settings, "show", "1", "--json")[1])
    assert doc["state"] == "quarantined" and shown["state"] == "quarantined", (doc, shown)
    assert client.store.books().quarantined == 1
    text = _out(settings, "trace", "--id", "1")[1]
    assert "state=quarantined" in text and "\x1b" not in text and "\r" not in text


def test_a_tenant_rate_is_audited_with_its_reason_like_a_domain_rate(client: Client, settings: Settings) -> None:
    client.enqueue(synthetic(1), recipients=["a@x.example.org"], tenant="acme")
    assert _out(settings, "rate", "set", "--tenant", "acme", "0", "--reason", REASON)[0] == 0
    assert _out(settings, "rate", "set", "--tenant", "acme", "5/s")[0] == 0
    rows = [json.loads(line) for line in _out(settings, "audit", "--json")[1].splitlines()]
    rates = [(r["action"], r.get("tenant"), r["reason"]) for r in rows if r["action"] == "rate-set"]
    assert sorted(rates) == sorted([("rate-set", "acme", REASON), ("rate-set", "acme", "")]), rows
    text = _out(settings, "audit")[1]
    assert "\x1b" not in text and "\r" not in text and text.count("\n") == 2, repr(text)
    # An unknown tenant is refused and leaves no audit record.
    code, _o, err = _out(settings, "rate", "set", "--tenant", "nobody", "5/s")
    assert code == 2 and err.count("\n") == 1 and client.redis.xlen(keys.AUDIT) == 2
