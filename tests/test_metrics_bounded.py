"""/metrics on a bad day: thousands of domains paused or behind an open breaker give a bounded
number of series (the domains with mail first) and a count of them all."""

from __future__ import annotations

from collections.abc import Callable

from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.flow.breaker import Breakers
from drain.intake.api import Client
from drain.observe.metrics import DOMAINS_EXPOSED
from tests.test_metrics import scrape

PAUSED = 10_000
OPENED = 300


def _series(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels) in samples if n == name]


def test_ten_thousand_paused_domains_and_hundreds_of_open_breakers_keep_metrics_bounded(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    """With 10,000 domains paused and 300 breakers open, /metrics had a drain_domain_paused and a
    drain_circuit_open series for every one (~10,300 series, ~0.5 MB a scrape, growing with the
    incident). Mutant caught: _domains without _first (every name exposed)."""
    client.enqueue(b"From: a@src.example\r\nTo: u@z-queued.example\r\nSubject: s\r\n"
                    b"Message-ID: <1@src.example>\r\n\r\nhi\r\n")
    pipe = client.redis.pipeline(transaction=False)
    for i in range(PAUSED):
        ratelimit.pause_domain(pipe, f"p{i:05d}.example")
    pipe.execute()
    ratelimit.pause_domain(client.redis, "z-queued.example")  # the one with mail: named first
    breakers = Breakers(client.redis, client.store.settings)
    for i in range(OPENED):
        for _ in range(client.store.settings.breaker_failures):
            breakers.failure(f"b{i:04d}.example")
    samples = scrape(client.store)
    paused = _series(samples, "drain_domain_paused")
    assert len(paused) == DOMAINS_EXPOSED and {"domain": "z-queued.example"} in paused
    assert len(_series(samples, "drain_circuit_open")) == DOMAINS_EXPOSED
    assert len(_series(samples, "drain_domain_held")) <= DOMAINS_EXPOSED
    assert samples[("drain_domains_paused", frozenset())] == PAUSED + 1
    assert samples[("drain_circuits_open", frozenset())] == OPENED
    assert len(samples) < 1000
