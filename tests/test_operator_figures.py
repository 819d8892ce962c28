"""Figures an operator reads during an incident must be true at the moment they are shown.

Found by operating drain by hand: mail for a paused domain (or one held at rate 0) waits on
the domain's parked list, and `drain status` said its oldest age was 0.0 s while that mail had
been waiting for minutes; the `DrainOldestMailTooOld` alert could never fire for it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from drain.flow import ratelimit
from drain.intake.api import Client
from drain.observe import backlog
from drain.observe.metrics import live, registry
from drain.settings import Settings
from drain.store import keys
from tests.test_cli import drain

MAIL = (b"From: app@example.com\r\nTo: user@paused.example\r\nSubject: waits\r\n"
        b"Message-ID: <waits@example.com>\r\nDate: Mon, 30 Nov 2026 00:00:00 +0000\r\n\r\nbody\r\n")


def _park_one(client: Client, work: Callable[..., bool]) -> str:
    ratelimit.pause_domain(client.redis, "paused.example")
    msg_id = client.enqueue(MAIL)
    work()
    assert client.redis.llen(keys.parked("paused.example")) == 1, "the message should wait parked"
    return msg_id


def test_oldest_age_counts_mail_parked_on_a_paused_domain(client: Client, work: Callable[..., bool]) -> None:
    _park_one(client, work)
    later = time.time() + 600
    assert client.store.books().ready == 1
    assert client.store.oldest_age_s(now=later) >= 600 - 5


def test_oldest_age_metric_counts_parked_mail(client: Client, work: Callable[..., bool]) -> None:
    _park_one(client, work)
    reg = registry(live(client.store))
    age = reg.get_sample_value("drain_oldest_age_seconds")
    assert age is not None and age > 0, "mail waits on a paused domain: its age must show"


def test_a_domain_held_at_rate_0_is_not_called_paused(client: Client, work: Callable[..., bool],
                                                      settings: Settings) -> None:
    """A cap of 0 was shown as "paused" by status, backlog and the page; the runbook says to
    `resume` a paused domain, and `drain resume --domain` then said "resumed" while nothing
    moved (only `drain rate set` lifts a rate of 0)."""
    ratelimit.set_domain(client.redis, "paused.example", 0)
    client.enqueue(MAIL)
    work()
    shape = backlog.shape(client.store)
    assert shape.held_by == {"paused.example": "rate 0"}
    result = drain(settings, "resume", "--domain", "paused.example")
    assert result.returncode == 0, result.stderr
    assert "rate is 0" in result.stderr.decode() and "drain rate set" in result.stderr.decode()
    doc = json.loads(drain(settings, "resume", "--domain", "paused.example", "--json").stdout)
    assert doc["held"] is True
    ratelimit.pause_domain(client.redis, "paused.example")
    ratelimit.set_domain(client.redis, "paused.example", None)
    assert backlog.shape(client.store).held_by == {"paused.example": "paused"}
    ratelimit.resume_domain(client.redis, "paused.example")
