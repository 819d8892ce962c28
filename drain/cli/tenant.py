"""`drain tenant`: list tenants, set a tenant's weight (and caps). Per-tenant rates and pauses
are `drain rate set --tenant` and `drain pause --tenant` (drain.cli.flow)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from drain.cli.cellcmds import on_tenant_cells, tenant_concurrency, tenant_rows
from drain.cli.options import Context, Whole, json_option, limit_option, pass_ctx
from drain.cli.render import emit, live, more_caption, out, rows_wanted
from drain.cli.terminal import cell, safe
from drain.flow import ratelimit
from drain.ops import tenants


@click.group()
def tenant() -> None:
    """Tenants (whose mail it is): fair shares of delivery, caps, pauses."""


@tenant.command("list")
@json_option('A JSON list of {"tenant", "ready_fresh", "ready_backlog", "queued", "weight", "rate", '
             '"concurrency", "paused"}.')
@limit_option
@pass_ctx
def tenant_list(obj: Context, as_json: bool, limit: int | None) -> None:
    """Every known tenant with its ready and queued mail, weight, caps and pause (on a
    terminal the first rows only: with 10,000 tenants it printed 10,000 rows in 15 s)."""
    rows = tenant_rows(obj) if obj.multi else tenants.listing(obj.client.store)
    wanted = rows_wanted(limit, as_json)
    if as_json:
        emit(rows if wanted is None else rows[:wanted])
        return
    table = Table("tenant", "ready", "queued", "weight", "rate", "concurrency", "paused",
                  caption=more_caption(len(rows), wanted))
    for row in rows if wanted is None else rows[:wanted]:
        table.add_row(cell(row["tenant"]), str(row["ready_fresh"] + row["ready_backlog"]), str(row["queued"]),
                      str(row["weight"]), ratelimit.format_rate(row["rate"]), str(row["concurrency"] or "-"),
                      "yes" if row["paused"] else "")
    out.print(table)


@tenant.command("set")
@click.argument("name", metavar="TENANT")
@click.option("--weight", type=Whole(), default=None, help=f"Share of delivery against other tenants (1 to "
              f"{tenants.MAX_WEIGHT}; 1 is everyone's default). Live for all workers.")
@click.option("--concurrency", type=Whole(0), default=None,
              help="Most messages of this tenant in flight at once (0 removes the cap).")
@json_option('Print {"tenant", "weight", "concurrency"} as JSON.')
@pass_ctx
def tenant_set(obj: Context, name: str, weight: int | None, concurrency: int | None, as_json: bool) -> None:
    """Set TENANT's weight or concurrency cap; an unknown tenant (no mail of it ever accepted) is refused."""
    if weight is None and concurrency is None:
        raise click.UsageError("give --weight or --concurrency")
    if obj.multi:  # the weight on every cell, the cap shared out (each cell holds ceil(C / N))
        if weight is not None:
            tenants.check_weight(weight)
            on_tenant_cells(obj, name, lambda store, _n: tenants.set_weight(store, name, weight))
        if concurrency is not None:
            tenant_concurrency(obj, name, concurrency)
    else:
        store = obj.client.store
        if weight is not None:
            tenants.set_weight(store, name, weight)
        if concurrency is not None:
            tenants.set_concurrency(store, name, concurrency)
    if as_json:
        emit({"tenant": name, "weight": weight, "concurrency": concurrency})
        return
    parts = ([f"weight {weight}"] if weight is not None else []) + (
        [f"{concurrency or 'no cap'} at once"] if concurrency is not None else [])
    click.echo(safe(f"{name}: {', '.join(parts)}"))


def by_tenant(obj: Context, as_json: bool, watch_s: float | None, top: int) -> None:
    """`drain backlog --by tenant`: queued and ready mail per tenant, most queued first."""

    def rows() -> list[dict[str, Any]]:
        listed = tenant_rows(obj) if obj.multi else tenants.listing(obj.client.store)
        return sorted(listed, key=lambda r: (-r["queued"], r["tenant"]))

    if as_json:
        listed = rows()
        emit({"by": "tenant", "total": sum(r["queued"] for r in listed), "tenants": listed})
        return

    def render() -> Table:
        listed = rows()
        more = len(listed) - top
        table = Table("tenant", "queued", "ready", "weight", "rate", "paused",
                      title=f"backlog by tenant: {sum(r['queued'] for r in listed):,} queued",
                      caption=f"{more:,} more tenant(s); --top N shows more" if more > 0 else None)
        for row in listed[:top]:
            table.add_row(cell(row["tenant"]), f"{row['queued']:,}",
                          f"{row['ready_fresh'] + row['ready_backlog']:,}", str(row["weight"]),
                          ratelimit.format_rate(row["rate"]),
                          "yes" if row["paused"] else "")
        return table

    live(render, watch_s)
