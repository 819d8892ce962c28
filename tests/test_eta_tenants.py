"""The ETA of `drain status` (and the status page, which reads the same Status) with
tenants held: a number only for mail that moves, and never shorter than a tenant's cap allows."""

from __future__ import annotations

from drain.flow import ratelimit
from drain.intake.api import Client
from drain.observe import backlog, status
from drain.ops import tenants


def _mail(tenant: str, n: int) -> bytes:
    return (f"From: a@{tenant}\r\nTo: u{n}@dest.example.net\r\nSubject: {n}\r\n"
            f"Message-ID: <{n}@{tenant}>\r\n\r\nhello\r\n").encode()


def test_mail_all_of_paused_tenants_gets_no_eta_but_the_reason(client: Client) -> None:
    """With a global rate of 10/s and every queued message of a paused tenant, status said
    "eta 2 s" (20 / 10/s) for mail that waits until someone resumes the tenant."""
    client.enqueue_many([_mail("acme.example", i) for i in range(20)])
    ratelimit.set_global(client.redis, 10.0)
    before = status.read(client.store)
    assert before.eta_s is not None and before.eta_s <= 3  # the mail moves: a number
    tenants.pause(client.store, "acme.example")
    after = status.read(client.store)
    assert after.eta_s is None
    assert after.held_by.get("*") == "tenant held: acme.example (paused)"
    assert backlog.shape(client.store).eta_s is None  # the one forecast: `drain backlog` agrees
    tenants.resume(client.store, "acme.example")
    tenants.set_rate(client.store, "acme.example", 0.0)
    zero = status.read(client.store)  # a rate of 0 holds as a pause does
    assert zero.eta_s is None and zero.held_by["*"] == "tenant held: acme.example (rate 0)"


def test_a_capped_tenant_alone_is_forecast_at_its_cap(client: Client) -> None:
    """A tenant capped at 1/s with 20 messages, under a global rate of 10/s: status said
    2 s; the tenant's cap makes it 20 s at least."""
    client.enqueue_many([_mail("acme.example", i) for i in range(20)])
    ratelimit.set_global(client.redis, 10.0)
    tenants.set_rate(client.store, "acme.example", 1.0)
    eta = status.read(client.store).eta_s
    assert eta is not None and 19 <= eta <= 21, eta
    assert backlog.shape(client.store).eta_s == eta
