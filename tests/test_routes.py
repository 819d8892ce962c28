"""Recipients by destination (each domain group obeys its own domain's limits) and routing with
fallback relays, against a real Redis and real aiosmtpd sinks."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from drain import validate
from drain.demo.seeding import synthetic
from drain.demo.sink import Received, Sink
from drain.flow import ratelimit
from drain.flow.breaker import RELAY, Breakers
from drain.intake.api import Client
from drain.observe.http import StatusServer
from drain.ops import control
from drain.settings import Settings
from drain.store import body, keys
from drain.worker import routing
from drain.worker.batch import Batch
from drain.worker.delivery import RelayConfig
from drain.worker.relays import Relays, relay_for
from tests.conftest import wait_for
from tests.test_cli import drain
from tests.test_web import fetch

A, B = "alpha.example.com", "beta.example.net"


def _two_domain(client: Client, count: int) -> list[str]:
    return [client.enqueue(synthetic(i), recipients=[f"user{i}@{A}", f"user{i}@{B}"]) for i in range(count)]


def _deliveries(*sinks: Sink) -> Counter[tuple[str, str]]:
    """(Message-ID, recipient) -> how many times the sinks received it."""
    return Counter((m.message_id, r) for s in sinks for m in s.messages for r in m.recipients)


def _run_until_done(client: Client, work: Callable[..., bool], deadline_s: float = 60.0, **overrides: object) -> None:
    """Burst workers (and due held mail promoted) until nothing is queued."""
    deadline = time.monotonic() + deadline_s
    while client.store.books().queued:
        assert time.monotonic() < deadline, f"mail still queued: {client.store.books()}"
        client.store.promote_due()
        work(**overrides)


def test_a_two_domain_message_obeys_each_domains_rate_per_recipient(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    ratelimit.set_domain(client.redis, B, 5.0)
    ids = _two_domain(client, 15)
    _run_until_done(client, work)

    # Checked at the relay, per recipient domain: no second saw more than B's cap (burst 1).
    beta = sorted(m.at for m in relay.messages if m.recipients[0].endswith(B))
    alpha = [m for m in relay.messages if m.recipients[0].endswith(A)]
    assert len(beta) == len(alpha) == 15
    assert all(len(m.recipients) == 1 for m in relay.messages), "a group crossed domains"
    worst = max(sum(1 for t in beta if start <= t < start + 1.0) for start in beta)
    assert worst <= 5 + 1, f"{worst} sends to {B} within one second at a cap of 5/s"
    # Every recipient got it once, and the message counts once in the books.
    assert set(_deliveries(relay).values()) == {1}
    books = client.store.books()
    assert (books.accepted, books.delivered, books.bounced) == (len(ids), len(ids), 0)


def test_a_paused_second_domain_holds_only_its_group(client: Client, relay: Sink,
                                                     work: Callable[..., bool]) -> None:
    control.pause(client.store, B)
    ids = _two_domain(client, 5)
    work()

    assert sorted(r for m in relay.messages for r in m.recipients) == sorted(f"user{i}@{A}" for i in range(5))
    books = client.store.books()
    assert (books.ready, books.delivered) == (5, 0), books
    for i, msg_id in enumerate(ids):
        stored = client.redis.hmget(keys.message(msg_id), ["env", "dom", "pd", "raw"])
        assert stored[0] == f'["billing@sender.example.com",["user{i}@{B}"]]'.encode()
        assert (stored[1], stored[2]) == (B.encode(), b"1")
        assert body.unpack(stored[3] or b"") == synthetic(i), "the one stored copy changed"
    # The backlog shape follows the domain still to do.
    shape = {k.decode().split("|")[0]: int(v) for k, v in client.redis.hgetall(keys.SHAPE).items()}
    assert shape == {B: 5}

    control.resume(client.store, B)
    _run_until_done(client, work)
    assert set(_deliveries(relay).values()) == {1} and len(_deliveries(relay)) == 10
    books = client.store.books()
    assert (books.accepted, books.delivered, books.bounced) == (5, 5, 0)
    assert client.redis.hgetall(keys.SHAPE) == {}


def test_a_bounce_in_one_group_and_delivery_in_another_count_once_as_delivered(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    relay.set_policy(rcpt_policy=lambda r: "550 5.1.1 no such user" if r.endswith(B) else None)
    _two_domain(client, 3)
    work()
    books = client.store.books()
    assert (books.accepted, books.delivered, books.bounced, books.queued) == (3, 3, 0, 0)
    assert len(client.redis.xrange(keys.BOUNCES)) == 3


@pytest.fixture
def sinks() -> Iterator[tuple[Sink, Sink]]:
    with Sink(keep=True) as first, Sink(keep=True) as second:
        yield first, second


def test_routes_by_domain_and_by_tenant_reach_their_relays(
        client: Client, relay: Sink, sinks: tuple[Sink, Sink], settings: Settings,
        work: Callable[..., bool]) -> None:
    by_domain, by_tenant = sinks
    done = drain(settings, "route", "set", "Routed.Example.com", by_domain.url)
    assert done.returncode == 0, done.stderr
    routing.set_route(client.redis, "tenant", "acme", [by_tenant.url])
    client.enqueue(synthetic(1), recipients=["one@routed.example.com", "two@plain.example.com"])
    # The tenant as the intake stores it (a route by tenant read another field before).
    client.enqueue(synthetic(2), recipients=["three@plain.example.org"], tenant="acme")
    client.enqueue(synthetic(3), recipients=["four@plain.example.org"])
    work()

    def got(sink: Sink) -> list[str]:
        return sorted(r for m in sink.messages for r in m.recipients)

    assert got(by_domain) == ["one@routed.example.com"]
    assert got(by_tenant) == ["three@plain.example.org"]
    assert got(relay) == ["four@plain.example.org", "two@plain.example.com"]
    listed = drain(settings, "route", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    shown = json.loads(listed.stdout)
    assert [(r["kind"], r["name"]) for r in shown["routes"]] == [
        ("domain", "routed.example.com"), ("tenant", "acme"), ("default", "*")]
    assert shown["relays"][f"relay:{by_tenant.url}"]["handed"] == 1


def test_a_killed_relay_fails_over_to_its_fallback_with_nothing_lost_or_doubled(
        client: Client, sinks: tuple[Sink, Sink], settings: Settings, work: Callable[..., bool]) -> None:
    _, fallback = sinks
    primary = Sink(keep=True).start()
    routing.set_route(client.redis, "domain", "example.com", [primary.url, fallback.url])
    client.enqueue_many([synthetic(i, domain="example.com") for i in range(10)])
    try:
        work()
    finally:
        primary.stop()  # killed: its port refuses connections from now on
    assert len(primary.messages) == 10 and fallback.messages == []

    started = time.monotonic()
    client.enqueue_many([synthetic(i, domain="example.com") for i in range(10, 40)])
    _run_until_done(client, work)
    took = time.monotonic() - started

    assert took < settings.breaker_cooldown_s, "the fallback took longer than one breaker cool-down"
    seen = _deliveries(primary, fallback)
    assert len(seen) == 40 and set(seen.values()) == {1}, "mail lost or delivered twice"
    assert len(fallback.messages) == 30
    states = routing.relay_states(client.redis, settings)
    dead = f"relay:{primary.url}"
    assert states[dead]["open"] is True
    # Once its breaker opened, the dead relay was no longer tried (each other lane of the
    # worker may have had one try under way as it opened).
    failures = settings.relay_breaker_failures
    assert failures <= states[dead]["failed"] <= failures + settings.relay_sessions - 1
    assert states[f"relay:{fallback.url}"]["handed"] == 30
    books = client.store.books()
    assert (books.delivered, books.deferred, books.bounced) == (40, 0, 0)


def test_a_silent_relay_costs_a_connect_timeout_not_a_stalled_worker(
        client: Client, sinks: tuple[Sink, Sink], settings: Settings, work: Callable[..., bool]) -> None:
    _, fallback = sinks
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # takes connections, never greets
    try:
        url = f"smtp://127.0.0.1:{silent.getsockname()[1]}"
        routing.set_route(client.redis, "domain", "example.com", [url, fallback.url])
        client.enqueue_many([synthetic(i, domain="example.com") for i in range(3)])
        started = time.monotonic()
        work(relay_timeout_s=30.0, relay_connect_timeout_s=0.3)
        took = time.monotonic() - started
    finally:
        silent.close()
    assert len(fallback.messages) == 3 and client.store.books().delivered == 3
    assert took < 30.0, f"a silent relay held the worker {took:.1f}s"


def test_a_5xx_through_a_routed_relay_bounces_that_message_only(
        client: Client, sinks: tuple[Sink, Sink], settings: Settings, work: Callable[..., bool]) -> None:
    primary, fallback = sinks

    def refuse_one(_index: int, msg: Received) -> str | None:
        return "554 5.6.0 message refused" if msg.message_id == "<synthetic-1@sender.example.com>" else None

    primary.set_policy(data_policy=refuse_one)
    routing.set_route(client.redis, "domain", "example.com", [primary.url, fallback.url])
    client.enqueue_many([synthetic(i, domain="example.com") for i in range(4)])
    work()
    books = client.store.books()
    assert (books.delivered, books.bounced) == (3, 1)
    assert fallback.messages == [], "a reply about one message sent it to the fallback"
    assert routing.relay_states(client.redis, settings)[f"relay:{primary.url}"]["failures"] == 0


def test_a_route_for_a_parent_domain_takes_its_subdomains_nearest_first(
        client: Client, relay: Sink, sinks: tuple[Sink, Sink], settings: Settings,
        work: Callable[..., bool]) -> None:
    """Mutants caught: Routes.chain looking up the exact domain only (the parents' routes
    ignored), the farthest parent first, a parent's route before the domain's own, or the
    tenant's before a parent's; check_name refusing a leading dot."""
    parent, nearer = sinks
    with Sink(keep=True) as exact, Sink(keep=True) as by_tenant:
        for name, sink in ((".Example.com", parent), (".sub.example.com", nearer), ("sub.example.com", exact)):
            done = drain(settings, "route", "set", name, sink.url)
            assert done.returncode == 0, done.stderr
        client.enqueue(synthetic(0), tenant="acme")
        assert drain(settings, "route", "set", "--tenant", "acme", by_tenant.url).returncode == 0
        routes = routing.Routes(client.redis, settings)
        routes.refresh(b"now")
        assert routes.chain("x.example.com", "acme") == (parent.url,)
        assert routes.chain("deep.sub.example.com", "acme") == (nearer.url,)
        assert routes.chain("sub.example.com", "acme") == (exact.url,)
        # A parent's route is for its subdomains, not the domain itself (as in Postfix).
        assert routes.chain("example.com", "acme") == (by_tenant.url,)
        assert routes.chain("example.com") == routes.chain("notexample.com") == routes.default
        for n, rcpt in enumerate(("a@x.example.com", "b@deep.sub.example.com", "c@sub.example.com",
                                  "d@example.com", "e@elsewhere.example.org")):
            client.enqueue(synthetic(n + 1), recipients=[rcpt], tenant="acme")
        work()

        def got(sink: Sink) -> list[str]:
            return sorted(r for m in sink.messages for r in m.recipients)

        assert (got(parent), got(nearer), got(exact)) == (
            ["a@x.example.com"], ["b@deep.sub.example.com"], ["c@sub.example.com"])
        assert {"d@example.com", "e@elsewhere.example.org"} <= set(got(by_tenant))
    listed = json.loads(drain(settings, "route", "list", "--json").stdout)
    assert [r["name"] for r in listed["routes"] if r["kind"] == "domain"] == [
        ".example.com", ".sub.example.com", "sub.example.com"]
    assert drain(settings, "route", "delete", ".example.com").returncode == 0
    for bad in ("..example.com", ".", ".@x"):
        assert drain(settings, "route", "set", bad, parent.url).returncode == 2, bad


@pytest.mark.parametrize("url", ["ftp://relay.example.com", "smtp://", "smtp://relay.example.com:99999",
                                 "smtp://user:secret@relay.example.com:2525", "smtps://user:secret@relay.example.com",
                                 "smtps://user:secret/x@relay.example.com", "smtps://user:secret#x@relay.example.com",
                                 "smtp://relay.example.com:0",
                                 "smtp://relay.example.com/path?x=1"])
def test_a_route_url_drain_cannot_use_is_refused_and_changes_nothing(settings: Settings, client: Client,
                                                                     url: str) -> None:
    done = drain(settings, "route", "set", "example.com", url)
    assert done.returncode == 2, done
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drain: error:"), lines
    assert "secret" not in done.stderr.decode()
    assert client.redis.hgetall(keys.ROUTES) == {}
    client.enqueue(synthetic(1), tenant="acme")  # a known tenant: the URL is what is refused
    bad_fallback = drain(settings, "route", "set", "--tenant", "acme", "smtp://127.0.0.1:2600", "--fallback", url)
    assert bad_fallback.returncode == 2 and client.redis.hgetall(keys.ROUTES) == {}


def test_a_relay_listed_twice_in_a_route_is_refused_and_changes_nothing(settings: Settings, client: Client,
                                                                        relay: Sink) -> None:
    """`route set d URL --fallback URL` was stored: a relay that failed was tried again at
    once as its own fallback (a second connect timeout, its failures counted twice).
    Mutant caught: set_route without the `twice` check."""
    url = "smtp://127.0.0.1:2600"
    for fallback in (url, url + "/", "SMTP://127.0.0.1:2600"):
        done = drain(settings, "route", "set", "example.com", url, "--fallback", "smtp://127.0.0.1:2601",
                     "--fallback", fallback)
        assert done.returncode == 2 and b"listed twice" in done.stderr, done
        assert len(done.stderr.splitlines()) == 1 and client.redis.hgetall(keys.ROUTES) == {}
    assert drain(settings, "route", "set", "example.com", url, "--fallback", "smtp://127.0.0.1:2601").returncode == 0

def test_a_route_for_an_unknown_tenant_is_refused_and_changes_nothing(settings: Settings, client: Client) -> None:
    """A tenant no mail was ever accepted for (a typo, most likely) would route nobody's mail."""
    done = drain(settings, "route", "set", "--tenant", "acmee", "smtp://127.0.0.1:2600")
    assert done.returncode == 2, done
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "unknown tenant 'acmee'" in lines[0], lines
    assert client.redis.hgetall(keys.ROUTES) == {}
    client.enqueue(synthetic(1), tenant="acmee")
    assert drain(settings, "route", "set", "--tenant", "acmee", "smtp://127.0.0.1:2600").returncode == 0
    assert client.redis.hgetall(keys.ROUTES) != {}


def test_routes_are_live_for_a_running_worker(client: Client, sinks: tuple[Sink, Sink], relay: Sink,
                                             settings: Settings) -> None:
    first, _ = sinks
    relays = Relays(client.redis, settings, relay_for(settings, RelayConfig.from_url(settings.relay)))
    try:
        routing.set_route(client.redis, "domain", "example.com", [first.url])
        client.enqueue(synthetic(1, domain="example.com"))
        assert Batch(client.store, relays, "live-worker", validate.Limits()).run() == 1
        assert routing.delete_route(client.redis, "domain", "example.com")
        client.enqueue(synthetic(2, domain="example.com"))
        assert Batch(client.store, relays, "live-worker", validate.Limits()).run() == 1
    finally:
        relays.close()
    # The same worker's relays followed the change: the route, then the default again.
    assert [len(first.messages), len(relay.messages)] == [1, 1]
    assert client.store.books().delivered == 2


def test_a_relay_at_its_concurrency_cap_holds_its_mail_until_a_slot_frees(
        client: Client, sinks: tuple[Sink, Sink], settings: Settings, work: Callable[..., bool]) -> None:
    first, fallback = sinks
    routing.set_route(client.redis, "domain", "example.com", [first.url, fallback.url])
    done = drain(settings, "route", "concurrency", first.url, "1")
    assert done.returncode == 0, done.stderr
    name = f"relay:{first.url}"
    # Another worker holds the relay's one slot.
    client.redis.zadd(keys.relay_busy(name), {"other-worker-message": time.time() + 60})
    client.enqueue(synthetic(1, domain="example.com"))
    work()
    books = client.store.books()
    assert (books.deferred, books.delivered) == (1, 0) and first.messages == [] == fallback.messages
    assert "concurrency cap" in (client.redis.hget(keys.message("1"), "last") or b"").decode()

    client.redis.delete(keys.relay_busy(name))
    _run_until_done(client, work)
    assert len(first.messages) == 1 and fallback.messages == []


def test_a_group_told_later_is_retried_alone_and_the_message_counts_once(
        client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    relay.set_policy(rcpt_policy=lambda r: "451 4.3.0 try later" if r.endswith(B) else None)
    (msg_id,) = _two_domain(client, 1)
    work()
    books = client.store.books()
    assert (books.deferred, books.delivered) == (1, 0)
    assert client.redis.hmget(keys.message(msg_id), ["dom", "pd"]) == [B.encode(), b"1"]

    relay.set_policy()
    client.store.promote_due(now=time.time() + 10**6)
    work()
    assert _deliveries(relay) == Counter({("<synthetic-0@sender.example.com>", f"user0@{A}"): 1,
                                          ("<synthetic-0@sender.example.com>", f"user0@{B}"): 1})
    books = client.store.books()
    assert (books.accepted, books.delivered, books.bounced, books.queued) == (1, 1, 0, 0)
    assert client.redis.hgetall(keys.SHAPE) == {}


def test_relays_show_in_drain_status_and_on_the_status_page(
        client: Client, settings: Settings) -> None:
    dead = "smtp://127.0.0.1:9"
    routing.set_route(client.redis, "domain", "example.com", [dead, "smtp://127.0.0.1:2600"])
    breakers = Breakers(client.redis, settings)
    for _ in range(settings.relay_breaker_failures):
        breakers.failure(f"relay:{dead}")
    client.redis.hset(keys.RELAY_HANDED, "relay:smtp://127.0.0.1:2600", 7)

    shown = drain(settings, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    relays = json.loads(shown.stdout)["relays"]
    assert relays[f"relay:{dead}"]["open"] is True and relays["relay:smtp://127.0.0.1:2600"]["handed"] == 7
    text = drain(settings, "status").stdout.decode()
    assert f"relay relay:{dead}" in text and "OPEN until" in text
    server = StatusServer(settings.redis_url or "", settings, "127.0.0.1", 0, refresh_s=0.1)
    server.start()
    try:
        wait_for(lambda: "<dt>Relays</dt>" in fetch(server.url).text, what="the page's first read")
        page = fetch(server.url).text
    finally:
        server.stop()
    assert f"relay:{dead}: 0 handed, 0 without a session <span class=\"no\">breaker open</span>" in page
    assert "relay:smtp://127.0.0.1:2600: 7 handed" in page


def test_an_open_environment_relay_holds_the_backlog_only_without_a_fallback_up(
        client: Client, settings: Settings) -> None:
    client.enqueue(synthetic(1))
    ratelimit.set_global(client.redis, 100.0)
    breakers = Breakers(client.redis, settings)
    for _ in range(settings.relay_breaker_failures):
        breakers.failure(RELAY)

    alone = json.loads(drain(settings, "status", "--json").stdout)
    assert "relay breaker open" in alone["held_by"].get("*", "")
    backed = json.loads(drain(settings, "status", "--json", env={"DRAIN_RELAY_FALLBACK": "smtp://127.0.0.1:2600"}).stdout)
    assert "*" not in backed["held_by"] and backed["eta_s"] is not None


def test_a_domain_route_written_with_a_root_dot_or_in_unicode_takes_its_mail(
        client: Client, relay: Sink, sinks: tuple[Sink, Sink], settings: Settings,
        work: Callable[..., bool]) -> None:
    """`route set Example.COM. URL` (the DNS root's dot) and `route set bücher.de URL` were
    accepted and stored as written, so no recipient (example.com, xn--bcher-kva.de) ever
    matched them: the mail went by the default route, silently. Mutants caught: check_name
    without ascii_domain (the names stored as written), chain not encoding a recipient's
    Unicode domain."""
    dotted, idn = sinks
    for name, sink in (("Example.COM.", dotted), ("BÜCHER.de", idn)):
        done = drain(settings, "route", "set", name, sink.url)
        assert done.returncode == 0, done.stderr
    listed = json.loads(drain(settings, "route", "list", "--json").stdout)
    assert sorted(r["name"] for r in listed["routes"] if r["kind"] == "domain") == ["example.com", "xn--bcher-kva.de"]
    routes = routing.Routes(client.redis, settings)
    routes.refresh(b"now")
    assert routes.chain("bücher.de") == routes.chain("xn--bcher-kva.de") == (idn.url,)
    assert routes.chain("example.com.") == (dotted.url,)
    client.enqueue(synthetic(0), recipients=["a@example.com"])
    client.enqueue(synthetic(1), recipients=["b@xn--bcher-kva.de"])
    work()
    assert [r for m in dotted.messages for r in m.recipients] == ["a@example.com"]
    assert [r for m in idn.messages for r in m.recipients] == ["b@xn--bcher-kva.de"]
    assert not relay.messages
    # A name that is no domain in any form is refused, nothing stored.
    for bad in ("\u200b.com", "example.com..", ". "):
        assert drain(settings, "route", "set", bad, dotted.url).returncode == 2, bad
    assert drain(settings, "route", "delete", "example.com.").returncode == 0
