"""Pause and resume (with why and for how long), `pause list`, and `drain audit`. What they
change is done by drain.ops.control; these parse and print."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import click

from drain.cli.actions import duration_option
from drain.cli.cellcmds import audit_rows, on_tenant_cells, pause_rows
from drain.cli.cells import on_each
from drain.cli.options import Context, domain_option, json_option, parsed, pass_ctx
from drain.cli.render import emit, when
from drain.cli.terminal import safe
from drain.flow import ratelimit
from drain.ops import audit as audit_log
from drain.ops import control, pauses, tenants
from drain.store.store import Store
from drain.trace import when as moments


@click.group(invoke_without_command=True)
@click.option("--intake", "intake_only", is_flag=True,
              help="Close the SMTP ingress instead (it answers 421); delivery goes on.")
@click.option("--domain", callback=domain_option, help="Pause only delivery to this destination domain.")
@click.option("--tenant", "tenant_name", default=None, help="Pause only delivery of this (known) tenant's mail.")
@click.option("--reason", default="", help="Why, for `pause list` and the audit log.")
@click.option("--for", "for_s", callback=duration_option, metavar="DURATION",
              help="Resume by itself after this long (90s, 15m, 2h, 7d).")
@json_option('Print {"scope", "name", "paused", "reason", "until"} as JSON.')
@click.pass_context
def pause(ctx: click.Context, intake_only: bool, domain: str | None, tenant_name: str | None, reason: str,
          for_s: float | None, as_json: bool) -> None:
    """Stop delivery on all workers (accepting goes on); with --intake, stop SMTP intake instead.
    `drain pause list` shows what is paused."""
    if ctx.invoked_subcommand is not None:
        if intake_only or domain or tenant_name or reason or for_s is not None or as_json:
            raise click.UsageError("options of `drain pause` go after it, not before `list`")
        return
    obj = ctx.find_object(Context)
    assert obj is not None
    if tenant_name is not None:
        _only_tenant(intake_only, domain, for_s)
        _on_tenant(obj, tenant_name, lambda store, name: tenants.pause(store, name, reason))
        emit({"scope": "tenant", "name": tenant_name, "paused": True}) if as_json else click.echo(
            safe(f"delivery of tenant {tenant_name} paused"))
        return
    _intake_alone(intake_only, domain)
    scope = on_each(obj, lambda store: control.pause(store, domain, intake_only, reason, for_s))
    name = domain.lower() if domain else None
    listed = [row for row in on_each(obj, lambda store: pauses.listing(store.client))
              if row["scope"] == scope and row["name"] == name]
    until = listed[0]["until"] if listed else None
    if listed and for_s is not None and (until is None or until > time.time() + for_s + 1):
        row = listed[0]
        click.echo(safe(f"drain: already paused since {when(row['since'] or 0)} by {row['actor'] or '?'} until "
                        f"{when(until) if until else 'resumed'}: kept (a pause never shortens one in force; "
                        "`drain resume` first)"), err=True)
    if as_json:
        emit({"scope": scope, "name": name, "paused": True, "reason": reason, "until": until})
        return
    what = {control.DOMAIN: f"delivery to {name} paused", control.INTAKE: "intake paused (SMTP ingress answers 421)",
            control.DELIVERY: "delivery paused"}[scope]
    click.echo(safe(what + (f" until {when(until)}" if until else "")))


@pause.command("list")
@json_option('One JSON document: [{"scope", "name", "reason", "actor", "since", "until", "cell"?}].')
@pass_ctx
def pause_list(obj: Context, as_json: bool) -> None:
    """What is paused (delivery, intake, domains, tenants), why, by whom, since and until when."""
    rows: list[dict[str, Any]] = pause_rows(obj) if obj.multi else pauses.listing(obj.client.redis)
    if as_json:
        emit(rows)
        return
    if not rows:
        click.echo("nothing is paused")
    for row in rows:
        what = f"{row['scope']} {row['name']}" if row["name"] else row["scope"]
        what = f"{row['cell']}: {what}" if "cell" in row else what
        click.echo(safe(f"{what}: paused since {when(row['since'] or 0)} by {row['actor'] or '?'}"
                        f" until {when(row['until']) if row['until'] else 'resumed'}"
                        + (f" ({row['reason']})" if row["reason"] else "")))


@click.command()
@click.option("--intake", "intake_only", is_flag=True, help="Reopen the SMTP ingress instead.")
@click.option("--domain", callback=domain_option, help="Resume only delivery to this destination domain.")
@click.option("--tenant", "tenant_name", default=None, help="Resume only delivery of this tenant's mail.")
@click.option("--reason", default="", help="Why, for the audit log.")
@json_option('Print {"scope", "name", "paused", "unparked"} as JSON.')
@pass_ctx
def resume(obj: Context, intake_only: bool, domain: str | None, tenant_name: str | None, reason: str,
           as_json: bool) -> None:
    """Start delivery again; with --intake, reopen SMTP intake instead."""
    if tenant_name is not None:
        _only_tenant(intake_only, domain, None)
        _on_tenant(obj, tenant_name, lambda store, name: tenants.resume(store, name, reason))
        emit({"scope": "tenant", "name": tenant_name, "paused": False, "unparked": 0}) if as_json else click.echo(
            safe(f"delivery of tenant {tenant_name} resumed"))
        return
    _intake_alone(intake_only, domain)
    scope = control.scope_of(domain, intake_only)
    name = domain.lower() if domain else None
    # Said rather than "resumed" when nothing of that scope was paused (one Redis; with cells
    # each cell's pauses are listed by `pause list`).
    was_paused = obj.multi or any(row["scope"] == scope and row["name"] == name
                                  for row in pauses.listing(obj.client.redis))
    moved: int = on_each(obj, lambda store: control.resume(store, domain, intake_only, reason), _total)
    # A rate of 0 holds delivery as a pause does, but only `rate set` lifts it: say so rather
    # than report delivery as going again while nothing moves (the first cell's rate tells).
    limits = on_each(obj, lambda store: ratelimit.show(store.client)) if scope != control.INTAKE else {}
    held = bool(limits.get("held")) if scope != control.DOMAIN else bool(
        cast(dict[str, dict[str, Any]], limits.get("domains", {})).get(str(domain).lower(), {}).get("held"))
    if as_json:
        doc: dict[str, Any] = {"scope": scope, "name": domain.lower() if domain else None, "paused": False,
                               "unparked": moved}
        emit(doc if scope == control.INTAKE else {**doc, "held": held})
        return
    what = f"delivery to {name}" if scope == control.DOMAIN else scope
    if not was_paused:
        click.echo(safe(f"{what} was not paused" + (f" ({moved} parked message(s) back to ready)" if moved else "")))
    elif scope == control.DOMAIN:
        click.echo(safe(f"{what} resumed ({moved} parked message(s) back to ready)"))
    else:
        click.echo(f"{what} resumed")
    if held:
        where = f" --domain {str(domain).lower()}" if scope == control.DOMAIN else ""
        click.echo(safe(f"drain: still held: the rate is 0; `drain rate set RATE{where}` (or unlimited) "
                        "lets it go"), err=True)


def _on_tenant(obj: Context, name: str, change: Callable[[Store, str], None]) -> None:
    """change(store, name) on the one Redis, or on every cell that knows the tenant (its mail
    may be in some cells only); unknown to every cell is refused."""
    if obj.multi:
        on_tenant_cells(obj, name, lambda store, _n: change(store, name))
    else:
        change(obj.client.store, name)


def _total(counts: list[int]) -> int:
    return sum(counts)


def _intake_alone(intake_only: bool, domain: str | None) -> None:
    # Together, --domain won and --intake was dropped: the intake an operator meant to close stayed open.
    if intake_only and domain is not None:
        raise click.UsageError("--intake does not go with --domain (the intake is one door for all mail)")


def _only_tenant(intake_only: bool, domain: str | None, for_s: float | None) -> None:
    if intake_only or domain is not None:
        raise click.UsageError("--tenant does not go with --intake or --domain")
    if for_s is not None:
        raise click.UsageError("--for does not go with --tenant yet: resume it with `drain resume --tenant`")


@click.command()
@click.option("--since", callback=parsed(moments.parse), metavar="TIME",
              help="Only records from then on: a duration ago (2h), unix seconds or ISO 8601.")
@json_option('JSON lines {"time", "actor", "action", "reason", "cell"?, ...}.')
@pass_ctx
def audit(obj: Context, since: float | None, as_json: bool) -> None:
    """Operator actions, oldest first: quarantine, rules, rates, pauses, bulk actions."""
    for entry in audit_rows(obj, since) if obj.multi else audit_log.entries(obj.client.redis, since):
        if as_json:
            emit(entry)
            continue
        rest = " ".join(f"{k}={v}" for k, v in entry.items()
                        if k not in ("time", "actor", "action", "reason", "cell") and v)
        cell = f"{entry['cell']} " if "cell" in entry else ""
        click.echo(safe(f"{when(entry['time'])} {cell}{entry['actor'] or '?'} {entry['action']}"
                        + (f" ({entry['reason']})" if entry["reason"] else "") + (f" {rest}" if rest else "")))
