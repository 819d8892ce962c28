"""The flow's commands: rate (show, set) and breaker (list, close) (pause and resume: pausing.py). What they
change is done by drain.ops.control; these parse, print and map errors."""

from __future__ import annotations

import time

import click
from rich.table import Table

import drain.cli.cellops as cellops
from drain.cli.cellcmds import tenant_rate
from drain.cli.cells import rate_shown, set_rate
from drain.cli.options import Context, FiniteFloat, Whole, domain_option, json_option, pass_ctx, rate_value
from drain.cli.render import emit, out, when
from drain.cli.terminal import cell, safe
from drain.errors import InputError
from drain.flow import ratelimit
from drain.ops import control, tenants


@click.group()
def rate() -> None:
    """Show or set the delivery rate, live for all workers."""


@rate.command("show")
@json_option('One JSON document {"global", "paused", "domains"}.')
@pass_ctx
def rate_show(obj: Context, as_json: bool) -> None:
    """Global and per-domain rates: operator caps, adaptive (throttled) rates, concurrency, pauses."""
    # With cells, each holds its share: the figures shown are the sums.
    shown = rate_shown(obj) if obj.multi else ratelimit.show(obj.client.redis)
    if as_json:
        emit(shown)
        return
    glob = shown["global"]
    click.echo(f"global: {ratelimit.format_rate(glob if isinstance(glob, float) else None)}"
               f"{'  (PAUSED)' if shown['paused'] else ''}")
    domains = shown["domains"]
    assert isinstance(domains, dict)
    for name, d in domains.items():
        parts = [f"cap {ratelimit.format_rate(d['rate'])}" if d["rate"] is not None else "no cap"]
        if d["effective"]:
            parts.append(f"throttled to {ratelimit.format_rate(d['effective'])}")
        if d["concurrency"]:
            parts.append(f"{d['concurrency']} at once")
        if d["paused"]:
            parts.append("PAUSED")
        click.echo(safe(f"{name}: {', '.join(parts)}"))


@rate.command("set")
@click.argument("value", metavar="RATE")
@click.option("--domain", callback=domain_option,
              help="Set the cap of this destination domain instead of the global rate.")
@click.option("--concurrency", type=Whole(0), default=None,
              help="With --domain: most messages in flight to it at once (0 removes the cap).")
@click.option("--burst", type=FiniteFloat(0, 60), default=None,
              help="Seconds of rate that may go at once (global setting).")
@click.option("--tenant", "tenant_name", default=None, help="Set the cap of this (known) tenant instead.")
@click.option("--reason", default="", help="Why, for the audit log.")
@json_option('Print {"domain", "rate", "concurrency", "burst"} as JSON ({"tenant", "rate"} with --tenant).')
@pass_ctx
def rate_set(obj: Context, value: str, domain: str | None, concurrency: int | None, burst: float | None,
             tenant_name: str | None, reason: str, as_json: bool) -> None:
    """Set RATE like 500/s, 30000/m; 0 holds delivery; 'unlimited' lifts the limit. Live for every worker."""
    per_second = rate_value(value, "RATE")
    if tenant_name is not None:
        if domain is not None or concurrency is not None or burst is not None:
            raise click.UsageError("--tenant goes alone (use `drain tenant set --concurrency` for its concurrency)")
        if obj.multi:  # each cell gets its share, as the global rate
            tenant_rate(obj, tenant_name, per_second, reason)
        else:
            tenants.set_rate(obj.client.store, tenant_name, per_second, reason)
        if as_json:
            emit({"tenant": tenant_name, "rate": per_second})
        else:
            click.echo(safe(f"tenant {tenant_name}: {ratelimit.format_rate(per_second)}"))
        return
    if concurrency is not None and domain is None:
        raise click.UsageError("--concurrency goes with --domain")
    if obj.multi:  # each cell gets its share of the rate (and of the concurrency)
        done = set_rate(obj, per_second, domain, concurrency, burst, reason)
    else:
        done = control.set_rate(obj.client.store, per_second, domain, concurrency, burst, reason)
    if as_json:
        emit({"domain": domain, "rate": per_second, "concurrency": concurrency, "burst": burst, "held": done.held})
        return
    held = "; a rate or 'unlimited' lets it go again" if done.held else ""
    if domain is not None:
        click.echo(safe(f"{domain}: {ratelimit.format_rate(per_second)}"
                        + (f", {concurrency} at once" if concurrency else "") + held))
    else:
        click.echo(f"global: {ratelimit.format_rate(per_second)}{held}")


@click.group()
def breaker() -> None:
    """Circuit breakers of destinations (and of the relay itself, named "(relay)")."""


@breaker.command("list")
@json_option("One JSON document.")
@pass_ctx
def breaker_list(obj: Context, as_json: bool) -> None:
    """Every destination with failures on record: failures, times opened, open until."""
    from drain.flow.breaker import Breakers

    now = time.time()
    if obj.multi:  # every cell's, merged by name, with the cells where it is open
        rows = cellops.breaker_rows(obj, now)
    else:
        states = Breakers(obj.client.redis, obj.settings).states()
        rows = [{"domain": d, "open": st.get("open_until", 0) > now, "open_until": st.get("open_until"),
                 "failures": int(st.get("failures", 0)), "trips": int(st.get("trips", 0))}
                for d, st in sorted(states.items())]
    if as_json:
        emit({"breakers": rows})
        return
    table = Table(title="circuit breakers")
    for column in ("domain", "state", "open until", "failures", "times opened"):
        table.add_column(column)
    for row in rows:
        until = row["open_until"]
        opened = "OPEN" + (f" ({', '.join(row['open_in'])})" if row.get("open_in") else "")
        table.add_row(cell(str(row["domain"])), opened if row["open"] else "closed",
                      when(float(until)) if isinstance(until, float) else "-", str(row["failures"]), str(row["trips"]))
    out.print(table)


@breaker.command("close")
@click.argument("domain", metavar="DOMAIN")
@click.option("--note", default="", help="Why, for the audit trail.")
@pass_ctx
def breaker_close(obj: Context, domain: str, note: str) -> None:
    """Close a breaker now (the far side is fixed): its held mail is due at once. Audited."""
    name = domain if domain == "(relay)" else domain.lower()
    released = (cellops.close_breaker(obj, name, note) if obj.multi
                else control.close_breaker(obj.client.store, name, obj.settings.actor, note))
    if released is None:
        raise InputError(f"no circuit breaker on record for {domain!r} (see `drain breaker list`)")
    click.echo(f"closed the circuit breaker for {name}; {released} held messages are due now")
