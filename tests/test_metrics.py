"""Prometheus metrics read from Redis: values checked against a state built by real workers."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.flow.breaker import Breakers
from drain.intake.api import Client, Submission
from drain.observe import metrics, model
from drain.observe.metrics import DrainCollector
from drain.observe.model import Reading, latency_buckets
from drain.settings import Settings
from drain.store import keys
from drain.store.store import Store
from drain.worker import routing
from tests.conftest import seed

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def scrape(store: Store) -> Samples:
    return parse(metrics.exposition(metrics.registry(metrics.live(store))).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_counters_depths_and_latency_follow_the_books(client: Client, relay: Sink,
                                                     work: Callable[..., bool]) -> None:
    bad = dict(seed("bad"))
    chosen = [bad["body_nul-byte.eml"], bad["header_missing-from.eml"]]
    client.enqueue_many([*(synthetic(i) for i in range(6)), *chosen])
    before = scrape(client.store)
    assert value(before, "drain_messages_total", event="accepted") == 8
    assert value(before, "drain_queue_depth", state="ready") == 8
    assert value(before, "drain_delivery_latency_seconds_count") == 0

    work()
    s = scrape(client.store)
    assert value(s, "drain_redis_up") == 1
    assert value(s, "drain_messages_total", event="accepted") == 8
    assert value(s, "drain_messages_total", event="delivered") == 6 == len(relay.messages)
    assert value(s, "drain_messages_total", event="bounced") == 0
    assert value(s, "drain_quarantine_findings_total", reason="body.nul-byte") == 1
    assert value(s, "drain_quarantine_findings_total", reason="header.missing-from") == 1
    assert value(s, "drain_queue_depth", state="quarantined") == 2
    assert value(s, "drain_queue_depth", state="ready") == 0
    assert value(s, "drain_books_balanced") == 1
    assert value(s, "drain_oldest_age_seconds") == 0
    # The histogram: cumulative buckets, +Inf equal to the count, one observation per delivery.
    assert value(s, "drain_delivery_latency_seconds_count") == 6
    bounds = [*model.LATENCY_BOUNDS, "+Inf"]
    counts = [value(s, "drain_delivery_latency_seconds_bucket", le=_le(b)) for b in bounds]
    assert counts == sorted(counts) and counts[-1] == 6
    assert value(s, "drain_delivery_latency_seconds_bucket", le="60.0") == 6  # delivered within the test
    assert 0 <= value(s, "drain_delivery_latency_seconds_sum") < 6 * 60


def _le(bound: str) -> str:
    """The le label as prometheus_client writes it (floats: "1.0", "+Inf")."""
    return bound if bound == "+Inf" else str(float(bound))


def test_rate_limit_waits_and_domain_series(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    ratelimit.pause_domain(client.redis, "held.example.com")
    ratelimit.set_domain(client.redis, "capped.example.org", 2.0)
    ratelimit.set_global(client.redis, 500.0)
    client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@{'held' if i < 3 else 'open'}.example.com",))
                         for i in range(5)])
    work()
    s = scrape(client.store)
    assert value(s, "drain_rate_limit_waits_total", kind="parked") == 3
    assert value(s, "drain_parked_messages") == 3
    assert value(s, "drain_queue_depth", state="ready") == 3
    assert value(s, "drain_backlog_messages", domain="held.example.com") == 3
    assert ("drain_backlog_messages", frozenset({("domain", "open.example.com")})) not in s  # all delivered
    assert value(s, "drain_domain_paused", domain="held.example.com") == 1
    assert value(s, "drain_domain_rate_limit_per_second", domain="capped.example.org", kind="cap") == 2
    assert value(s, "drain_rate_limit_per_second") == 500
    assert value(s, "drain_delivery_paused") == 0
    ratelimit.pause(client.redis)
    assert value(scrape(client.store), "drain_delivery_paused") == 1


def test_latency_buckets_become_cumulative() -> None:
    raw = {"1": 2.0, "60": 3.0, "inf": 1.0, "sum": 100.5}
    buckets, total, count = latency_buckets(raw)
    assert buckets == [("1", 2), ("5", 2), ("15", 2), ("60", 5), ("300", 5), ("900", 5), ("3600", 5),
                       ("14400", 5), ("86400", 5), ("+Inf", 6)]
    assert (total, count) == (100.5, 6)


def test_without_figures_only_redis_down_is_said(client: Client) -> None:
    reg = metrics.registry(lambda: Reading(None, False))
    assert parse(metrics.exposition(reg).decode()) == {("drain_redis_up", frozenset()): 0}
    # Stale figures are still exposed, next to drain_redis_up 0 and their age.
    figures = model.read(client.store)
    stale = parse(metrics.exposition(metrics.registry(lambda: Reading(figures, False))).decode())
    assert value(stale, "drain_redis_up") == 0 and value(stale, "drain_figures_age_seconds") >= 0
    assert ("drain_messages_total", frozenset({("event", "accepted")})) in stale


def test_collector_reads_findings_by_code(client: Client) -> None:
    client.redis.hincrby(keys.FINDINGS, "rule.match", 4)
    samples = list(DrainCollector(metrics.live(client.store)).collect())
    (found,) = [m for m in samples if m.name == "drain_quarantine_findings"]
    assert [(s.labels, s.value) for s in found.samples] == [({"reason": "rule.match"}, 4)]


def test_relays_have_their_own_series_for_the_configured_relays_only(client: Client, settings: Settings) -> None:
    """Mutants caught: _relays left out of the collector; the configured filter dropped (a
    relay named only by leftover counts, or planted in Redis, would get a series); the
    busy count read for every relay or never. The exposition passes `promtool check metrics`."""
    dead, capped = "smtp://127.0.0.1:9", "smtp://127.0.0.1:2600"
    routing.set_route(client.redis, "domain", "example.com", [dead, capped])
    for _ in range(settings.relay_breaker_failures):
        Breakers(client.redis, settings).failure(f"relay:{dead}")
    routing.set_concurrency(client.redis, capped, 4, settings)
    client.redis.hset(keys.RELAY_HANDED, mapping={f"relay:{capped}": 7, "relay:smtp://gone.example:25": 3,
                                                  "planted\nname": 9})
    client.redis.hset(keys.RELAY_FAILED, f"relay:{dead}", 2)
    client.redis.zadd(keys.relay_busy(f"relay:{capped}"), {"m1": time.time() + 60, "m2": time.time() + 60,
                                                           "lapsed": time.time() - 1})
    text = metrics.exposition(metrics.registry(metrics.live(client.store))).decode()
    samples = parse(text)
    assert value(samples, "drain_relay_handed_total", relay=f"relay:{capped}") == 7
    assert value(samples, "drain_relay_failed_total", relay=f"relay:{dead}") == 2
    assert value(samples, "drain_relay_circuit_open", relay=f"relay:{dead}") == 1
    assert value(samples, "drain_relay_circuit_open", relay="(relay)") == 0
    failures = routing.relay_states(client.redis, settings)[f"relay:{dead}"]["failures"]
    assert value(samples, "drain_relay_breaker_failures", relay=f"relay:{dead}") == failures
    assert value(samples, "drain_relay_concurrency_limit", relay=f"relay:{capped}") == 4
    assert value(samples, "drain_relay_sessions", relay=f"relay:{capped}") == 2
    relays = {dict(labels)["relay"] for (name, labels) in samples if name.startswith("drain_relay_")}
    assert relays == {"(relay)", f"relay:{dead}", f"relay:{capped}"}, relays
    assert not any(name == "drain_relay_sessions" and dict(labels)["relay"] != f"relay:{capped}"
                   for (name, labels) in samples)
    promtool = shutil.which("promtool")
    if promtool:
        checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                                 timeout=30, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
