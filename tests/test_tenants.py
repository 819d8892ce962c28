"""Tenants: every message has one, claims are fair between them (deficit round robin with
weights), and each may be capped, limited in concurrency or paused. Real Redis, real SMTP."""

from __future__ import annotations

import json
import smtplib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from drain.demo.sink import Sink
from drain.intake.api import Client, Submission
from drain.intake.smtpd import Ingress
from drain.intake.smtpd_limits import AuthGuard
from drain.ops import tenants
from drain.settings import Settings
from drain.store import keys, record
from drain.store.store import Outcome
from tests.test_ingress import BOTH, PASSWORD, USER, drain_cli, queued_id, submit

Work = Callable[..., bool]


def mail(tenant: str, n: int) -> bytes:
    """A message whose sender names its tenant (the relay sees who it was for)."""
    return (f"From: a@{tenant}.example.com\r\nTo: u{n}@dest.example.net\r\nSubject: {tenant} {n}\r\n"
            f"Message-ID: <{tenant}.{n}@example.com>\r\n\r\nhello {n}\r\n").encode()


def tenant_of(message: Any) -> str:
    return str(message.sender).split("@")[1].split(".")[0]


def order(relay: Sink) -> list[str]:
    return [tenant_of(m) for m in sorted(relay.messages, key=lambda m: m.at)]


def test_small_tenants_are_served_in_turn_beside_a_big_backlog(client: Client, relay: Sink, work: Work) -> None:
    """Mutant caught: claim.lua serving each tenant's whole list before the next (no
    rotation after its credit): the small tenants then come after all of `big`."""
    client.enqueue_many([mail("big", i) for i in range(200)])
    small = [f"s{k}" for k in range(5)]
    client.enqueue_many([mail(t, i) for i in range(10) for t in small])
    # One relay session: the relay then sees claim order. With two, a claim runs beside the next
    # and the arrival order mixes them (by up to a batch), which says nothing about claim.lua.
    work(relay_sessions=1)
    seen = order(relay)
    assert len(seen) == 250
    # Round by round: 6 tenants with ready mail, one message each per round.
    last_small = max(i for i, t in enumerate(seen) if t != "big")
    assert last_small < 60 + 20, f"the small tenants waited behind the big one: last at {last_small}"
    # The k-th message of every small tenant arrives by round k + 1 (6 tenants a round), give or
    # take one round. A tenant may finish early; none may lag.
    for tenant in small:
        places = [i for i, t in enumerate(seen) if t == tenant]
        assert len(places) == 10
        for k, place in enumerate(places):
            assert place < 6 * (k + 1) + 6, f"{tenant}'s message {k} waited until place {place}: {seen[:place + 1]}"


def test_weights_are_honoured(client: Client, relay: Sink, work: Work, settings: Settings) -> None:
    """Mutant caught: claim.lua ignoring the weight (credit always 1): a and b then go 1:1."""
    client.enqueue_many([mail("a", 0), mail("b", 0)])
    tenants.set_weight(client.store, "a.example.com", 3)
    client.enqueue_many([mail(t, i) for i in range(1, 81) for t in ("a", "b")])
    work(relay_sessions=1)  # the relay sees claim order (see above)
    first = Counter(order(relay)[:40])
    assert 28 <= first["a"] <= 32 and 8 <= first["b"] <= 12, first


def test_a_tenant_rate_cap_holds_and_others_flow(client: Client, relay: Sink, work: Work) -> None:
    """Mutant caught: the tenant's room not limiting what claim.lua takes (its rate then
    goes as fast as the worker)."""
    client.enqueue(mail("capped", 0))
    client.enqueue(mail("free", 0))
    rate = 20.0
    tenants.set_rate(client.store, "capped.example.com", rate)
    client.enqueue_many([mail(t, i) for i in range(1, 61) for t in ("capped", "free")])
    work()
    capped = sorted(m.at for m in relay.messages if tenant_of(m) == "capped")
    free = sorted(m.at for m in relay.messages if tenant_of(m) == "free")
    assert len(capped) == len(free) == 61
    burst = int(rate * Settings().burst_s)
    for i, start in enumerate(capped):
        assert sum(1 for t in capped[i:] if t < start + 1.0) <= rate + burst + 1
    assert capped[-1] - capped[0] >= (61 - burst) / rate - 0.3
    assert free[-1] < capped[-1] - 1.0  # the other tenant was not held back by the cap


def test_a_paused_tenant_waits_and_others_go(client: Client, relay: Sink, work: Work) -> None:
    """Mutant caught: claim.lua not checking the paused tenants set."""
    client.enqueue(mail("held", 0))
    tenants.pause(client.store, "held.example.com")
    client.enqueue_many([mail(t, i) for i in range(1, 11) for t in ("held", "other")])
    work()
    assert Counter(order(relay)) == {"other": 10}
    assert client.store.books().ready == 11
    tenants.resume(client.store, "held.example.com")
    work()
    assert Counter(order(relay)) == {"other": 10, "held": 11}


def test_a_tenant_concurrency_cap_limits_claims(client: Client) -> None:
    """Mutant caught: claim.lua not counting the tenant's busy set."""
    client.enqueue_many([mail("one", i) for i in range(5)] + [mail("two", i) for i in range(5)])
    tenants.set_concurrency(client.store, "one.example.com", 2)
    first = client.store.claim("w1", 10)
    owners = Counter(client.redis.hget(keys.message(i), record.TENANT) for i in first.ids)
    assert owners == {b"one.example.com": 2, b"two.example.com": 5}
    assert client.store.claim("w2", 10).ids == []  # "one" is at its cap while those are held
    client.store.settle("w1", [Outcome(i, "delivered") for i in first.ids])  # the slots free when settled
    again = client.store.claim("w3", 10).ids
    assert len(again) == 2 and {client.redis.hget(keys.message(i), record.TENANT) for i in again} == {
        b"one.example.com"}
    client.store.settle("w3", [Outcome(i, "delivered") for i in again])


def test_tenant_from_api_header_and_sender(client: Client, relay: Sink, work: Work, settings: Settings) -> None:
    """Mutants caught: resolve() ignoring the header; the header left in the stored bytes
    when DRAIN_TENANT_HEADER_REMOVE is set; the API's tenant= not taking precedence."""
    api = Client(client.redis, settings.with_(tenant_header="X-Tenant", tenant_header_remove=True))
    tagged = b"X-Tenant: acme\r\n" + mail("s", 1)
    by_header = api.enqueue(tagged)
    by_api = api.enqueue(tagged, tenant="named")
    by_sender = api.enqueue(mail("plain", 2))
    many = api.enqueue_many([Submission(mail("s", 3), tenant="sub"), mail("s", 4)], tenant="batch").ids
    stored = {i: client.redis.hget(keys.message(i), record.TENANT) for i in (by_header, by_api, by_sender, *many)}
    assert stored == {by_header: b"acme", by_api: b"named", by_sender: b"plain.example.com",
                      many[0]: b"sub", many[1]: b"batch"}
    work()
    assert len(relay.messages) == 5
    assert all(b"X-Tenant" not in m.data for m in relay.messages)


def test_a_bad_tenant_name_is_refused_at_the_api(client: Client) -> None:
    from drain.errors import InputError

    with pytest.raises(InputError):
        client.enqueue(mail("x", 1), tenant="has space")
    assert client.store.books().accepted == 0


@pytest.fixture
def ingress(client: Client) -> Iterator[Callable[..., Ingress]]:
    started: list[Ingress] = []

    def start(**overrides: Any) -> Ingress:
        api = Client(client.redis, client.settings.with_(**overrides))
        server = Ingress(api, "127.0.0.1", 0, features=BOTH, hostname="drain.test", guard=AuthGuard(delay_s=0.01))
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


def test_tenant_from_smtp_auth_user_and_client_network(client: Client, rclient: redis.Redis,
                                                       ingress: Callable[..., Ingress]) -> None:
    """Mutants caught: handle_DATA not passing the AUTH user, or not looking up the network."""
    from drain.settings.values import parse_networks

    with_auth = ingress(smtpd_auth_user=USER, smtpd_auth_password=PASSWORD, smtpd_auth_plaintext=True,
                        smtpd_tenants=((parse_networks("127.0.0.0/8")[0], "lab"),))
    by_network = ingress(smtpd_tenants=((parse_networks("127.0.0.0/8")[0], "lab"),))
    with smtplib.SMTP("127.0.0.1", with_auth.port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.login(USER, PASSWORD)
        auth_id = queued_id(submit(smtp, mail("s", 1))[1])
    with smtplib.SMTP("127.0.0.1", by_network.port, timeout=10) as smtp:
        net_id = queued_id(submit(smtp, mail("s", 2))[1])
    assert rclient.hget(keys.message(auth_id), record.TENANT) == USER.encode()
    assert rclient.hget(keys.message(net_id), record.TENANT) == b"lab"


def test_setting_an_unknown_tenant_is_refused_and_changes_nothing(client: Client, rclient: redis.Redis,
                                                                  settings: Settings) -> None:
    """Mutant caught: ops.tenants._known not checking the tenants set."""
    client.enqueue(mail("real", 1))
    for args in (("tenant", "set", "nobody", "--weight", "2"), ("rate", "set", "10/s", "--tenant", "nobody"),
                 ("pause", "--tenant", "nobody")):
        result = drain_cli(settings, *args)
        assert result.returncode == 2, result
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "unknown tenant" in lines[0], lines
    assert not rclient.exists(keys.TENANT_WEIGHTS, keys.TENANT_RATES, keys.PAUSED_TENANTS)
    ok = drain_cli(settings, "tenant", "set", "real.example.com", "--weight", "2")
    assert ok.returncode == 0 and rclient.hget(keys.TENANT_WEIGHTS, "real.example.com") == b"2"
    listed = drain_cli(settings, "tenant", "list", "--json")
    assert json.loads(listed.stdout)[0] | {"ready_fresh": 0} == {
        "tenant": "real.example.com", "ready_fresh": 0, "ready_backlog": 0, "queued": 1, "weight": 2, "rate": None,
        "concurrency": None, "paused": False}


def test_tenants_are_shown_in_status_backlog_metrics_and_the_page(client: Client, settings: Settings) -> None:
    """Mutants caught: status.tenant_figures not ranking by queued mail; the page printing
    tenant names without --show-messages; the metric left out of the collector."""
    from drain.observe import metrics
    from drain.observe import page as statuspage
    from drain.observe.model import Reader
    from drain.observe.snapshot import Snapshots

    client.enqueue_many([mail("zed", i) for i in range(6)] + [mail("small", i) for i in range(2)])
    tenants.pause(client.store, "small.example.com")
    status = json.loads(drain_cli(settings, "status", "--json").stdout)
    assert status["tenants"] == [{"tenant": "zed.example.com", "queued": 6},
                                 {"tenant": "small.example.com", "queued": 2}]
    assert status["tenants_paused"] == ["small.example.com"]
    by_tenant = json.loads(drain_cli(settings, "backlog", "--by", "tenant", "--json").stdout)
    assert by_tenant["total"] == 8
    assert [(r["tenant"], r["queued"], r["paused"]) for r in by_tenant["tenants"]] == [
        ("zed.example.com", 6, False), ("small.example.com", 2, True)]
    plain = drain_cli(settings, "backlog", "--by", "tenant").stdout.decode()
    assert "zed.example.com" in plain and "backlog by tenant: 8 queued" in plain
    exposed = metrics.exposition(metrics.registry(metrics.live(client.store))).decode()
    assert 'drain_tenant_backlog_messages{tenant="zed.example.com"} 6.0' in exposed
    for show in (False, True):
        snapshots = Snapshots(Reader(client.store, show).read, 1.0, show)
        assert snapshots.refresh()
        html = statuspage.render(snapshots.view())
        assert "Queued by tenant" in html
        assert ("zed.example.com" in html) is show


def test_ready_mail_of_a_drain_from_before_tenants_is_adopted(client: Client, relay: Sink, work: Work) -> None:
    """Mutant caught: adopt.lua not pushing the ids to their tenants' lists (lost from the
    books, never delivered)."""
    ids = client.enqueue_many([mail("old", i) for i in range(3)]).ids
    # As an older drain left them: one list per lane, no tenant in the message.
    r = client.redis
    r.delete(keys.lane("fresh", "old.example.com"), keys.READY_COUNT, keys.ring("fresh") + ":join", keys.TENANTS)
    r.rpush(keys.LEGACY_READY[1], *ids)
    for msg_id in ids:
        r.hdel(keys.message(msg_id), record.TENANT)
    assert client.store.books().ready == 3 and client.store.books().balanced
    assert client.store.adopt_legacy() == 3
    assert not r.exists(*keys.LEGACY_READY) and client.store.books().ready == 3
    work()
    assert len(relay.messages) == 3
    assert r.sismember(keys.TENANTS, "old.example.com")


def test_a_tenant_rate_of_zero_holds_its_mail_without_busy_jobs(client: Client, relay: Sink, work: Work) -> None:
    """Mutant caught: dispatch.held_by_tenant_pauses not counting tenants held by a rate of 0
    (batch jobs are then queued again and again for mail no claim can take: the burst
    worker never ends)."""
    client.enqueue(mail("zero", 0))
    tenants.set_rate(client.store, "zero.example.com", 0.0)
    client.enqueue_many([mail(t, i) for i in range(1, 6) for t in ("zero", "other")])
    work()
    assert Counter(order(relay)) == {"other": 5}
    assert client.redis.llen(f"rq:queue:{keys.RQ_QUEUE}") == 0
    tenants.set_rate(client.store, "zero.example.com", None)
    work()
    assert Counter(order(relay)) == {"other": 5, "zero": 6}


def test_tenant_list_leaves_out_mail_an_action_took_at_once(client: Client, relay: Sink, work: Work,
                                                            settings: Settings) -> None:
    """Mutants caught: act.lua not noting the lane of an id it sweeps off a ready list, and
    ops.tenants.listing not subtracting the notes: deleted or held mail stayed in ready_*
    until a claim passed it."""
    from drain.ops import actions
    from drain.ops.select import Selector

    def ready(name: str) -> tuple[int, int]:
        row = next(r for r in tenants.listing(client.store) if r["tenant"] == name)
        return row["ready_fresh"], row["ready_backlog"]

    fresh = [client.enqueue(mail("acme", i), tenant="acme") for i in range(4)]
    backlog = client.enqueue_many([mail("acme", 10 + i) for i in range(3)], lane="backlog", tenant="acme").ids
    client.enqueue(mail("other", 1), tenant="other")
    assert ready("acme") == (4, 3)
    # By id (its lane is looked up) and by selector (its lane is where it was found).
    assert actions.run(client.store, "delete", Selector(ids=(fresh[0],))).moved == 1
    assert actions.run(client.store, "hold", Selector(ids=(backlog[0],))).moved == 1
    assert actions.run(client.store, "bounce", Selector(sender="a@acme.example.com", older_than_s=0,
                                                        states=("ready",)), reason="t").moved == 5
    assert ready("acme") == (0, 0) and ready("other") == (1, 0)
    listed = drain_cli(settings, "tenant", "list", "--json")
    assert {r["tenant"]: r["ready_fresh"] + r["ready_backlog"] for r in json.loads(listed.stdout)} == {
        "acme": 0, "other": 1}, listed
    # Once the claim has passed the swept ids, their notes are stale and tidied away.
    work()
    assert ready("acme") == (0, 0) and ready("other") == (0, 0)
    assert not client.redis.exists(keys.SWEPT) and not client.redis.hlen(keys.SWEPT_LANE)
    assert actions.run(client.store, "release", Selector(ids=(backlog[0],)), force=True).moved == 1
    assert ready("acme") == (0, 1)


def test_tenant_list_leaves_out_mail_a_quarantine_rule_swept_at_once(client: Client, relay: Sink, work: Work,
                                                                     settings: Settings) -> None:
    """`drain quarantine rule add` sweeps matching ready mail into quarantine, but its ids
    wait on the tenant's lane until a claim passes them: tenant list still counted them
    as ready (act.lua notes the lane for delete/hold/bounce; the rule's sweep did not).
    Mutant caught: rules.sweep without _note_lane."""
    for i in range(3):
        client.enqueue(mail("acme", i), tenant="acme", recipients=[f"u{i}@spam.example.org"])
    client.enqueue_many([mail("acme", 10 + i) for i in range(2)], lane="backlog", tenant="acme")
    client.enqueue_many([mail("acme", 20)], lane="backlog", tenant="acme")
    added = drain_cli(settings, "quarantine", "rule", "add", "--domain", "spam.example.org", "--json")
    assert json.loads(added.stdout)["swept"] == 3, added
    listed = drain_cli(settings, "tenant", "list", "--json")
    assert [(r["ready_fresh"], r["ready_backlog"]) for r in json.loads(listed.stdout) if r["tenant"] == "acme"] == [
        (0, 3)], listed
    work()
    assert len(relay.messages) == 3 and not any(r.endswith("spam.example.org") for m in relay.messages
                                                for r in m.recipients)
    # The claim passed the swept ids: the next listing counts nothing and tidies the notes.
    rows = tenants.listing(client.store)
    assert [r["ready_fresh"] + r["ready_backlog"] for r in rows if r["tenant"] == "acme"] == [0]
    assert not client.redis.exists(keys.SWEPT) and not client.redis.hlen(keys.SWEPT_LANE)


def test_reports_are_booked_under_the_original_messages_tenant(client: Client, relay: Sink, work: Work) -> None:
    """Mutants caught: Batch._send_reports, actions.send_reports or lifetime's _report not
    passing the original's tenant: the report is booked under the null sender's "-"."""
    from drain.ops import actions
    from drain.ops.select import Selector
    from drain.store import events
    from drain.worker import lifetime

    store = client.store
    store.settings = store.settings.with_(dsn=True, max_lifetime_s=3600.0)

    def blue(n: int) -> bytes:  # a sender whose domain is not its tenant
        return mail("blue", n).replace(b"a@blue.example.com", b"a@blue.example.org")

    relay.set_policy(rcpt_policy=lambda r: {"u1": "550 5.1.1 no such user", "u3": "451 4.3.0 later"}.get(
        r.split("@")[0]))
    client.enqueue(blue(1), tenant="acme")  # refused by the relay: the worker's report
    client.enqueue(blue(3), tenant="initech")  # deferred, then expired: the lifetime's report
    work(dsn=True)
    bounced = client.enqueue(blue(2), tenant="globex")  # bounced by the operator
    assert actions.run(store, "bounce", Selector(ids=(bounced,)), reason="test").reports == 1
    expired, _warned = lifetime.scan(store, now=time.time() + 3601, force=True)
    assert expired == 1
    relay.set_policy()
    work(dsn=True)
    received = [e for e in events.decode_all(client.redis.xrange(keys.EVENTS)) if e["event"] == "received"]
    assert sorted(e["tenant"] for e in received if e.get("source") == "dsn") == ["acme", "globex", "initech"]
    reports = [m for m in relay.messages if m.sender == ""]
    assert len(reports) == 3 and all(m.recipients == ("a@blue.example.org",) for m in reports)
