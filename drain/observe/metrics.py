"""Prometheus metrics, read from Redis rather than counted in worker memory.

Workers run on many machines and come and go; every figure they would count is already
kept in Redis by the state moves themselves (the books, findings by reason, the latency
histogram, rate-limit waits). So one reader exposes them all: a custom collector on a
private registry, fed by whatever supplies the figures (`drain serve` hands it the last
snapshot its refresher took, so a scrape never waits on Redis). It sits on the read model
(drain.observe.model), like the page and /status.json.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from drain.observe.markup import visible
from drain.observe.model import Figures, Reading, latency_buckets, read
from drain.store.store import Store

# Domains given their own backlog series, largest first: more would swamp Prometheus.
DOMAINS_EXPOSED = 50
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Relays given their own series (those the environment or a route names now, most handed
# first): the label values come from the configuration, never from a message.
RELAYS_EXPOSED = 100
# The longest label value taken from mail (domains, tenants) as it is; see _label.
LABEL_CHARS = 100
# Counters of the books hash exposed as drain_messages_total{event=...}.
EVENTS = ("accepted", "delivered", "bounced", "deleted")


def live(store: Store) -> Callable[[], Reading]:
    """A source that reads Redis at every scrape (for embedding the collector elsewhere)."""

    def source() -> Reading:
        try:
            return Reading(read(store), True)
        except redis.RedisError:
            return Reading(None, False)

    return source


class DrainCollector:
    """A prometheus_client collector over a source of Readings."""

    def __init__(self, source: Callable[[], Reading]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        reading = self.source()
        yield GaugeMetricFamily("drain_redis_up", "1 when the last read of Redis succeeded, else 0.",
                                value=1 if reading.up else 0)
        f = reading.figures
        if f is None:
            return
        yield GaugeMetricFamily("drain_figures_age_seconds",
                                "Seconds since the figures below were read from Redis.",
                                value=max(0.0, time.time() - f.read_at))
        yield from _counters(f)
        yield from _gauges(f)
        buckets, total, _count = latency_buckets(f.latency)
        yield HistogramMetricFamily("drain_delivery_latency_seconds",
                                    "Time from acceptance to delivery of delivered messages.",
                                    buckets=[(_le(le), n) for le, n in buckets], sum_value=total)
        yield from _domains(f)
        yield from _tenants(f)
        yield from _relays(f)
        if f.cells:
            yield from _cells(f)


def _cells(f: Figures) -> Iterator[Metric]:
    """Per-cell series, with several cells (the series above are their sums)."""
    up = GaugeMetricFamily("drain_cell_up", "1 when the cell's Redis answered the last read.", labels=["cell"])
    depth = GaugeMetricFamily("drain_cell_queue_depth", "Messages in each state now, by cell (cells that "
                              "answered).", labels=["cell", "state"])
    done = CounterMetricFamily("drain_cell_messages", "Messages that entered a state, by cell.",
                               labels=["cell", "event"])
    for row in f.cells:
        up.add_metric([row["cell"]], 1 if row["up"] else 0)
        if row["up"]:
            for state in ("ready", "deferred", "in_flight", "quarantined"):
                depth.add_metric([row["cell"], state], row[state])
            for event in EVENTS:
                done.add_metric([row["cell"], event], row[event])
    yield up
    yield depth
    yield done


def _le(bound: str) -> str:
    """A bucket bound as Prometheus clients write it ("1.0", "+Inf"), so series line up."""
    return bound if bound == "+Inf" else repr(float(bound))


def _counters(f: Figures) -> Iterator[Metric]:
    events = CounterMetricFamily("drain_messages", "Messages that entered a state, by event "
                                 "(accepted; delivered, bounced, deleted are final).", labels=["event"])
    for event in EVENTS:
        events.add_metric([event], f.counters.get(event, 0))
    yield events
    found = CounterMetricFamily("drain_quarantine_findings", "Quarantine findings by reason code "
                                "(a message found with two codes counts under both).", labels=["reason"])
    for code, count in sorted(f.findings.items()):
        found.add_metric([code], count)
    yield found
    waits = CounterMetricFamily("drain_rate_limit_waits", "Times mail waited instead of going: held (a domain's "
                                "rate booked a later send time, or its circuit breaker is open) or parked "
                                "(domain paused or at its concurrency cap).", labels=["kind"])
    waits.add_metric(["held"], f.counters.get("held_total", 0))
    waits.add_metric(["parked"], f.counters.get("parked_total", 0))
    yield waits


def _gauges(f: Figures) -> Iterator[Metric]:
    books = f.status.books
    depth = GaugeMetricFamily("drain_queue_depth", "Messages in each state now.", labels=["state"])
    for state, value in (("ready", books.ready), ("deferred", books.deferred), ("in_flight", books.in_flight),
                         ("quarantined", books.quarantined)):
        depth.add_metric([state], value)
    yield depth
    why = GaugeMetricFamily("drain_deferred_messages", "Deferred messages by why they wait: held for their "
                            "domain's booked send time (rate), held by an open circuit breaker (breaker), or "
                            "deferred by the relay (relay); they add up to drain_queue_depth{state=\"deferred\"}.",
                            labels=["reason"])
    for reason in ("rate", "breaker", "relay"):
        why.add_metric([reason], f.status.deferred_by.get(reason, 0))
    yield why
    yield GaugeMetricFamily("drain_parked_messages", "Ready messages parked behind a paused or capped domain "
                            "(included in drain_queue_depth{state=\"ready\"}).", value=f.counters.get("parked", 0))
    yield GaugeMetricFamily("drain_books_balanced", "1 when accepted equals the sum of every state.",
                            value=1 if books.balanced else 0)
    yield GaugeMetricFamily("drain_oldest_age_seconds", "Age of the oldest message still to be worked.",
                            value=f.status.oldest_age_s)
    yield GaugeMetricFamily("drain_delivery_rate_per_second", "Deliveries per second over the last 30 s.",
                            value=f.status.rate_per_s)
    if f.status.eta_s is not None:
        yield GaugeMetricFamily("drain_eta_seconds", "Time until the mail that moves is worked: the longest "
                                "domain's ETA from its cap, adaptive rate and share of the throughput (absent "
                                "while unknown or while all is held).", value=f.status.eta_s)
    held = GaugeMetricFamily("drain_domain_held", "1 for each destination whose mail does not move, by why "
                             f"(paused, breaker, rate; the {DOMAINS_EXPOSED} with most mail).",
                             labels=["domain", "reason"])
    for domain in _first(f, f.status.held_by):
        held.add_metric([_label(domain), _why(f.status.held_by[domain])], 1)
    yield held
    limit = f.limits.get("global")
    if isinstance(limit, float):
        yield GaugeMetricFamily("drain_rate_limit_per_second", "Global delivery rate setting (absent: unlimited).",
                                value=limit)
    yield GaugeMetricFamily("drain_delivery_paused", "1 while delivery is paused.",
                            value=1 if f.limits.get("paused") else 0)
    yield GaugeMetricFamily("drain_intake_paused", "1 while the SMTP ingress is paused.",
                            value=1 if f.intake_paused else 0)


def _domains(f: Figures) -> Iterator[Metric]:
    queued = GaugeMetricFamily("drain_backlog_messages", f"Queued messages by destination domain "
                               f"(the {DOMAINS_EXPOSED} largest).", labels=["domain"])
    for entry in f.shape.domains[:DOMAINS_EXPOSED]:
        queued.add_metric([_label(entry.domain)], entry.total)
    yield queued
    caps = GaugeMetricFamily("drain_domain_rate_limit_per_second", "Per-domain rate: the operator's cap, or the "
                             "adaptive rate after throttling replies.", labels=["domain", "kind"])
    paused = GaugeMetricFamily("drain_domain_paused", "1 for each destination domain paused.", labels=["domain"])
    domains = cast(dict[str, dict[str, Any]], f.limits.get("domains", {}))
    limited = [n for n, d in domains.items() if d.get("rate") is not None or d.get("effective") is not None]
    for name in _first(f, limited):
        for kind, key in (("cap", "rate"), ("effective", "effective")):
            if domains[name].get(key) is not None:
                caps.add_metric([_label(name), kind], float(domains[name][key]))
    held = [n for n, d in domains.items() if d.get("paused")]
    for name in _first(f, held):
        paused.add_metric([_label(name)], 1)
    yield caps
    yield paused
    opened = GaugeMetricFamily("drain_circuit_open", "1 for each destination whose circuit breaker is open.",
                               labels=["domain"])
    for name in _first(f, f.status.breakers_open):
        opened.add_metric([_label(name)], 1)
    yield opened
    # On a bad day thousands of domains may be limited, paused or cut off: their series are
    # kept to the DOMAINS_EXPOSED with the most mail, and these count them all.
    for metric, text, count in (("drain_domains_limited", "Destination domains with a rate cap or adaptive rate.",
                                 len(limited)),
                                ("drain_domains_paused", "Destination domains paused.", len(held)),
                                ("drain_circuits_open", "Destinations whose circuit breaker is open.",
                                 len(f.status.breakers_open))):
        yield GaugeMetricFamily(metric, text, value=count)


def _first(f: Figures, names: Iterable[str]) -> list[str]:
    """The DOMAINS_EXPOSED of these names that have the most queued mail ("*" first), then by name."""
    rank = {d.domain: i for i, d in enumerate(f.shape.domains)}
    return sorted(names, key=lambda n: (n != "*", rank.get(n, len(rank)), n))[:DOMAINS_EXPOSED]


def _why(reason: str) -> str:
    for word in ("breaker", "paused", "rate 0"):
        if word in reason:
            return word.split()[0]
    return "held"


def _tenants(f: Figures) -> Iterator[Metric]:
    queued = GaugeMetricFamily("drain_tenant_backlog_messages", "Queued messages by tenant (the tenants with the "
                               "most; drain_tenants_queued counts them all).", labels=["tenant"])
    for name, count in f.status.tenants:
        queued.add_metric([_label(name)], count)
    yield queued
    yield GaugeMetricFamily("drain_tenants_queued", "Tenants with queued mail.", value=f.status.tenants_queued)


def _relays(f: Figures) -> Iterator[Metric]:
    """Per relay (named as in `drain route list`): its counts, cap, handoffs now and breaker."""
    configured = [(name, st) for name, st in f.status.relays.items() if st.get("configured", True)]
    configured.sort(key=lambda row: (-_number(row[1].get("handed")), row[0]))
    handed = CounterMetricFamily("drain_relay_handed", "Destination groups each relay gave a reply about "
                                 "(2xx, 4xx or 5xx).", labels=["relay"])
    failed = CounterMetricFamily("drain_relay_failed", "Times each relay gave no usable session (refused, "
                                 "no greeting, TLS, AUTH); the next relay of the route took the mail.",
                                 labels=["relay"])
    opened = GaugeMetricFamily("drain_relay_circuit_open", "1 while the relay's circuit breaker is open.",
                               labels=["relay"])
    failures = GaugeMetricFamily("drain_relay_breaker_failures", "Failures the relay's breaker counts now "
                                 "(it opens at DRAIN_RELAY_BREAKER_FAILURES).", labels=["relay"])
    cap = GaugeMetricFamily("drain_relay_concurrency_limit", "Most messages handed to the relay at once by "
                            "all workers (relays with a cap).", labels=["relay"])
    busy = GaugeMetricFamily("drain_relay_sessions", "Messages being handed to the relay now (counted for "
                             "relays with a concurrency cap).", labels=["relay"])
    refusing = GaugeMetricFamily("drain_relay_refusing", "1 while the 5xx storm guard holds the relay as refusing "
                                 "everything (its 5xx defer, not bounce).", labels=["relay"])
    for name, st in configured[:RELAYS_EXPOSED]:
        refusing.add_metric([name], 1 if st.get("refusing") else 0)
        handed.add_metric([name], _number(st.get("handed")))
        failed.add_metric([name], _number(st.get("failed")))
        opened.add_metric([name], 1 if st.get("open") else 0)
        failures.add_metric([name], _number(st.get("failures")))
        if _number(st.get("concurrency")) > 0:
            cap.add_metric([name], _number(st.get("concurrency")))
            busy.add_metric([name], _number(st.get("busy")))
    yield from (handed, failed, opened, failures, cap, busy, refusing)


def _label(text: str) -> str:
    """A label value that came from mail (a recipient domain, a tenant): as it is when short and
    printable, else its controls made visible, cut to LABEL_CHARS and ended by a hash of the
    whole, so two long names sharing a start stay two series (a repeated series fails the scrape)."""
    if len(text) <= LABEL_CHARS and text.isprintable():
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{visible(text)[:LABEL_CHARS]}~{digest}"


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def registry(source: Callable[[], Reading]) -> CollectorRegistry:
    """A private registry holding only drain's collector (no process or GC metrics)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DrainCollector(source))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format (served as CONTENT_TYPE)."""
    return generate_latest(reg)
