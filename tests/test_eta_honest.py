"""The ETA an operator reads on a bad day: no figure, and the reason, when every queued message
is held (a domain's breaker open); and never sooner than the deferred mail's next attempts."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.flow.breaker import Breakers
from drain.intake.api import Client
from drain.observe import backlog, metrics, status
from drain.store import keys


def _mail(domain: str, n: int) -> bytes:
    return (f"From: a@src.example\r\nTo: u{n}@{domain}\r\nSubject: {n}\r\n"
            f"Message-ID: <{n}@{domain}>\r\n\r\nhello\r\n").encode()


def _eta_metric(client: Client) -> list[float]:
    text = metrics.exposition(metrics.registry(metrics.live(client.store))).decode()
    return [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "drain_eta_seconds"]


def _defer_all(client: Client, relay: Sink, work: Callable[..., bool], n: int = 20) -> None:
    client.enqueue_many([_mail("down.example", i) for i in range(n)])
    relay.set_policy(lambda _i, _m: "451 4.3.0 try again later")
    work()
    assert client.store.books().deferred == n


def test_all_mail_behind_an_open_breaker_gets_no_eta_but_the_reason(client: Client, relay: Sink,
                                                                    work: Callable[..., bool]) -> None:
    """Every queued message was to a domain whose breaker was open: status said "eta 0 s" (the
    largest of no figures) and /metrics drain_eta_seconds 0, as if the queue were done."""
    _defer_all(client, relay, work)
    opened = Breakers(client.store.client, client.store.settings).states()
    assert opened.get("down.example", {}).get("open_until", 0) > time.time()  # the bad day is set
    ratelimit.set_global(client.redis, 100.0)
    st = status.read(client.store)
    assert st.eta_s is None
    assert list(st.held_by) == ["down.example"] and st.held_by["down.example"].startswith("breaker open until")
    assert backlog.shape(client.store).eta_s is None  # `drain backlog` agrees
    assert _eta_metric(client) == []  # the metric is absent while all is held, as its help says


def test_deferred_mail_is_not_forecast_before_its_next_attempt(client: Client, relay: Sink,
                                                               work: Callable[..., bool]) -> None:
    """The relay deferred every message (next attempt minutes away) and no breaker held them:
    with a global rate of 100/s status said "eta 0.2 s"."""
    _defer_all(client, relay, work)
    client.redis.delete(keys.BREAKER_OPEN, keys.BREAKER_FAILS, keys.BREAKER_TRIPS)
    ratelimit.set_global(client.redis, 100.0)
    due = [score for _m, score in client.redis.zrange(keys.DEFERRED, 0, -1, withscores=True)]
    wait = max(due) - time.time()
    assert wait > 30  # the next attempts are far off
    eta = status.read(client.store).eta_s
    assert eta is not None and eta >= wait - 5, eta
    shape = backlog.shape(client.store)  # `drain backlog` agrees (read a moment later), its domain too
    assert shape.eta_s is not None and abs(shape.eta_s - eta) < 5, (shape.eta_s, eta)
    [domain] = shape.domains
    assert domain.eta_s is not None and domain.eta_s >= wait - 5, domain.eta_s


def test_deferred_mail_bounds_the_eta_when_another_domain_is_held(client: Client, relay: Sink,
                                                                  work: Callable[..., bool]) -> None:
    """As above with another domain paused: the headline counts only the mail that moves, and
    that mail (all deferred for minutes) was forecast at 0.2 s. Mutant caught: the floor taken
    only when nothing is held."""
    _defer_all(client, relay, work)
    client.redis.delete(keys.BREAKER_OPEN, keys.BREAKER_FAILS, keys.BREAKER_TRIPS)
    client.enqueue_many([_mail("paused.example", i) for i in range(5)])
    ratelimit.pause_domain(client.redis, "paused.example")
    ratelimit.set_global(client.redis, 100.0)
    wait = max(score for _m, score in client.redis.zrange(keys.DEFERRED, 0, -1, withscores=True)) - time.time()
    st = status.read(client.store)
    assert st.held_by == {"paused.example": "paused"}
    assert st.eta_s is not None and st.eta_s >= wait - 5, st.eta_s
