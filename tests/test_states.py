"""Deferred mail named for what it is (held for rate, held by a breaker, deferred by the
relay), circuit breakers an operator can list and close, and ETAs from one forecast."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.flow.breaker import Breakers
from drain.intake.api import Client, Submission
from drain.observe import backlog
from drain.observe.status import read as read_status
from drain.settings import Settings
from drain.store import keys
from tests.test_cli import drain
from tests.test_metrics import scrape, value


def _queue(client: Client, domain: str, count: int, start: int = 0) -> list[str]:
    return client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@{domain}",))
                                for i in range(start, start + count)]).ids


def _open_breaker(client: Client, settings: Settings, domain: str) -> None:
    breakers = Breakers(client.redis, settings)
    for _ in range(settings.breaker_failures):
        breakers.failure(domain)
    assert breakers.states()[domain]["open_until"] > time.time()


def _lines(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, object]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_deferred_is_split_by_why_mail_waits(client: Client, relay: Sink, settings: Settings,
                                            work: Callable[..., bool]) -> None:
    ratelimit.set_domain(client.redis, "slow.example.com", 1.0)
    _open_breaker(client, settings, "down.example.com")
    relay.set_policy(rcpt_policy=lambda r: "451 4.3.0 mailbox busy" if r.endswith("@busy.example.com") else None)
    _queue(client, "slow.example.com", 2)
    _queue(client, "down.example.com", 3, 10)
    _queue(client, "busy.example.com", 2, 20)
    work()  # no housekeeping: held mail stays held
    st = read_status(client.store)
    assert st.books.deferred == 6
    assert st.deferred_by == {"rate": 1, "breaker": 3, "relay": 2}
    doc = json.loads(drain(settings, "status", "--json").stdout)
    assert doc["deferred"] == 6 and doc["deferred_by"] == {"rate": 1, "breaker": 3, "relay": 2}
    plain = drain(settings, "status").stdout.decode()
    assert "held for rate" in plain and "held by a breaker" in plain and "deferred by the relay" in plain

    samples = scrape(client.store)
    assert {r: value(samples, "drain_deferred_messages", reason=r) for r in ("rate", "breaker", "relay")} == \
        {"rate": 1, "breaker": 3, "relay": 2}

    relayed = _lines(drain(settings, "deferred", "list", "--json", "--reason", "relay"))
    assert len(relayed) == 2 and all(r["reason"] == "relay" for r in relayed)
    assert all(isinstance(r["last_reply"], dict) and r["last_reply"]["code"] == 451
               and "mailbox busy" in str(r["last_reply"]["text"]) for r in relayed)
    assert all(h["reply"]["code"] == 451 for r in relayed for h in r["history"])  # type: ignore[attr-defined,index]
    held = _lines(drain(settings, "deferred", "list", "--json", "--reason", "breaker", "--domain", "DOWN.example.com"))
    assert len(held) == 3 and all(r["attempts"] == 0 and r["last_reply"] is None for r in held)
    assert all("circuit breaker open for down.example.com" in str(r["held_because"]) for r in held)
    (rate,) = _lines(drain(settings, "deferred", "list", "--json", "--domain", "slow.example.com"))
    assert rate["reason"] == "rate" and rate["attempts"] == 0
    assert _lines(drain(settings, "deferred", "list", "--json", "--reason", "rate",
                        "--domain", "busy.example.com")) == []

    # The held sets follow promotion: once due, mail leaves them with the deferred set.
    client.store.promote_due(now=time.time() + 3600)
    assert read_status(client.store).deferred_by == {"rate": 0, "breaker": 0, "relay": 0}
    assert client.redis.zcard(keys.HELD_RATE) == client.redis.zcard(keys.HELD_BREAKER) == 0
    client.store.client.delete(keys.BREAKER_OPEN)  # let the rest go
    relay.set_policy()
    work()


def test_breaker_close_lets_held_mail_go_now_and_is_audited(client: Client, relay: Sink, settings: Settings,
                                                            work: Callable[..., bool]) -> None:
    _open_breaker(client, settings, "down.example.com")
    _queue(client, "down.example.com", 3)
    work()
    assert read_status(client.store).deferred_by["breaker"] == 3
    (listed,) = json.loads(drain(settings, "breaker", "list", "--json").stdout)["breakers"]
    assert listed["domain"] == "down.example.com" and listed["open"] is True

    result = drain(settings, "breaker", "close", "down.example.com", "--note", "remote fixed",
                   env={"DRAIN_ACTOR": "alice@ops"})
    assert result.returncode == 0, result.stderr
    assert b"3 held messages are due now" in result.stdout
    assert json.loads(drain(settings, "breaker", "list", "--json").stdout)["breakers"] == []
    (entry,) = client.redis.xrange(keys.AUDIT)[-1:]
    audit = {k.decode(): v.decode() for k, v in entry[1].items()}
    assert audit["action"] == "breaker-close" and audit["actor"] == "alice@ops"
    assert audit["id"] == "breaker:down.example.com" and audit["note"] == "remote fixed"
    assert client.store.promote_due() == 3  # due now, not after the cool-down
    work()
    assert client.store.books().delivered == 3 and len(relay.messages) == 3

    missing = drain(settings, "breaker", "close", "nowhere.example.com")
    assert missing.returncode == 1 and len(missing.stderr.decode().strip().splitlines()) == 1


def test_forecast_takes_caps_adaptive_rates_global_share_and_holds(client: Client, settings: Settings) -> None:
    ratelimit.set_global(client.redis, 100.0)
    ratelimit.set_domain(client.redis, "capped.example.com", 20.0)
    ratelimit.pause_domain(client.redis, "paused.example.com")
    _open_breaker(client, settings, "down.example.com")
    _queue(client, "capped.example.com", 200)
    _queue(client, "free.example.com", 300, 1000)
    _queue(client, "paused.example.com", 5, 2000)
    _queue(client, "down.example.com", 4, 3000)
    shape = backlog.shape(client.store, pace=0.0)
    by = {d.domain: d for d in shape.domains}
    # capped takes its cap (20/s) for 10 s; free gets the rest of the global 100/s: 300 / 80.
    assert by["capped.example.com"].eta_s == pytest.approx(10.0)
    assert by["free.example.com"].eta_s == pytest.approx(300 / 80)
    assert (by["paused.example.com"].eta_s, by["paused.example.com"].held_by) == (None, "paused")
    assert by["down.example.com"].eta_s is None
    assert str(by["down.example.com"].held_by).startswith("breaker open until ")
    assert shape.eta_s == pytest.approx(10.0)
    assert set(shape.held_by) == {"paused.example.com", "down.example.com"}
    # A throttled domain goes at its adaptive rate when that is lower than its cap.
    client.redis.hset(keys.DOMAIN_EFFECTIVE, "capped.example.com", "10.0")
    assert backlog.shape(client.store, pace=0.0).eta_s == pytest.approx(20.0)
    # status, its JSON and the text give the same figure and name what holds mail back.
    assert read_status(client.store).eta_s == pytest.approx(20.0)
    doc = json.loads(drain(settings, "status", "--json").stdout)
    assert doc["eta_s"] == pytest.approx(20.0) and doc["held_by"]["paused.example.com"] == "paused"
    text = drain(settings, "status").stdout.decode()
    assert "20 s" in text and "paused.example.com (paused)" in text and "breaker open until" in text
    shown = json.loads(drain(settings, "backlog", "--json").stdout)
    assert {d["domain"]: d["eta_s"] for d in shown["domains"]}["capped.example.com"] == pytest.approx(20.0)
    # Without a global rate, uncapped mail gets what the recent pace says is left.
    ratelimit.set_global(client.redis, None)
    later = backlog.shape(client.store, pace=50.0)
    assert {d.domain: d.eta_s for d in later.domains}["free.example.com"] == pytest.approx(300 / 40)
    client.redis.delete(keys.BREAKER_OPEN)
    ratelimit.resume_domain(client.redis, "paused.example.com")
    ratelimit.pause(client.redis)
    assert backlog.shape(client.store, pace=50.0).held_by == {"*": "delivery paused"}
