"""`drain route`: relays by destination domain or tenant, with fallbacks, live for all workers.
Storage and checks are drain.worker.routing's; these parse, print and map errors."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from drain.cli.cellcmds import routes_of_each
from drain.cli.cells import on_each, read_up
from drain.cli.options import Context, Whole, json_option, pass_ctx
from drain.cli.render import emit, out, when
from drain.cli.terminal import cell, safe
from drain.errors import InputError
from drain.flow.breaker import RELAY
from drain.observe.cells import add_relays
from drain.store import tenancy
from drain.worker import routing
from drain.worker.delivery import RelayConfig


def _target(names: tuple[str, ...], tenant: str | None, want: int) -> tuple[routing.Kind, str, list[str]]:
    """(kind, name, the other arguments) from DOMAIN ... or --tenant T ...; UsageError if neither fits."""
    if tenant is not None:
        if len(names) != want - 1:
            raise click.UsageError("with --tenant, give no DOMAIN" + (" and one relay URL" if want > 1 else ""))
        return "tenant", tenant, list(names)
    if len(names) != want:
        raise click.UsageError("give DOMAIN" + (" and one relay URL" if want > 1 else "") + ", or --tenant T")
    return "domain", names[0], list(names[1:])


@click.group()
def route() -> None:
    """Relays by destination domain or tenant, with fallbacks; live for every worker."""


@route.command("set")
@click.argument("names", nargs=-1, metavar="[DOMAIN] URL")
@click.option("--tenant", default=None, help="Route this tenant's mail (domain and parent-domain routes go first).")
@click.option("--fallback", "fallbacks", multiple=True, metavar="URL",
              help="A relay tried, in the order given, while the ones before it are down (repeatable).")
@json_option('Print {"kind", "name", "relay", "fallbacks"} as JSON.')
@pass_ctx
def route_set(obj: Context, names: tuple[str, ...], tenant: str | None, fallbacks: tuple[str, ...],
              as_json: bool) -> None:
    """Send mail for DOMAIN (or --tenant T) through the relay at URL (smtp://host:port,
    smtp+starttls://, smtps://; no credentials: those come from the environment). A DOMAIN
    with a leading dot (.example.com) takes its subdomains, as in a Postfix transport map.
    Precedence: the domain's route, its nearest parent's, the tenant's, the default."""
    kind, name, urls = _target(names, tenant, 2)
    if kind == "tenant" and not on_each(obj, lambda store: tenancy.known(store.client, name), any):
        # As `drain tenant set` does: a typo would otherwise route nobody's mail, silently.
        raise click.UsageError(f"unknown tenant {name!r}: no mail of it was ever accepted (see `drain tenant list`)")
    for url in (*urls, *fallbacks):
        routing.not_own_ingress(url, obj.settings.smtpd_listen)
    # Routes are settings of each Redis: every cell gets the same.
    name = on_each(obj, lambda store: routing.set_route(store.client, kind, name, [*urls, *fallbacks]))
    shown = routing.Route(kind, name, (*urls, *fallbacks)).to_json()
    if as_json:
        emit(shown)
        return
    tail = f" (then {', '.join(fallbacks)})" if fallbacks else ""
    click.echo(safe(f"{kind} {name}: {urls[0]}{tail}"))


@route.command("delete")
@click.argument("names", nargs=-1, metavar="[DOMAIN]")
@click.option("--tenant", default=None, help="Delete this tenant's route.")
@json_option('Print {"kind", "name", "deleted"} as JSON.')
@pass_ctx
def route_delete(obj: Context, names: tuple[str, ...], tenant: str | None, as_json: bool) -> None:
    """Delete the route of DOMAIN (or --tenant T): its mail goes by the default route again."""
    kind, name, _rest = _target(names, tenant, 1)
    deleted: bool = on_each(obj, lambda store: routing.delete_route(store.client, kind, name), any)
    if as_json:
        emit({"kind": kind, "name": routing.check_name(kind, name, settable=False), "deleted": deleted})
    elif not deleted:
        raise InputError(f"no route for {kind} {name}")
    else:
        click.echo(safe(f"deleted the route of {kind} {name}"))


@route.command("concurrency")
@click.argument("url", metavar="URL|(relay)")
@click.argument("most", type=Whole(0), metavar="N")
@pass_ctx
def route_concurrency(obj: Context, url: str, most: int) -> None:
    """Most messages handed to the relay at URL at once, by all workers (0 removes the cap).
    Over several cells each cell's workers get ceil(N / cells) of it."""
    settings = obj.settings
    each = -(-most // len(obj.members)) if obj.multi else most
    name = on_each(obj, lambda store: routing.set_concurrency(store.client, settings.relay if url == RELAY else url,
                                                              each, settings))
    click.echo(safe(f"{name}: {most} at once" if most else f"{name}: no concurrency cap"))


def _default(obj: Context) -> dict[str, Any]:
    urls = (obj.settings.relay, *obj.settings.relay_fallbacks)
    shown = [RelayConfig.from_url(u).redacted() for u in urls]
    return {"kind": "default", "name": "*", "relay": shown[0], "fallbacks": shown[1:]}


@route.command("list")
@json_option('One JSON document {"routes": [{"kind", "name", "relay", "fallbacks"}], "relays": {name: state}, '
             '"cells_agree"? (several cells)}.')
@pass_ctx
def route_list(obj: Context, as_json: bool) -> None:
    """Every route (the environment's default last) and every relay's counts and breaker."""
    differ = ""
    if obj.multi:  # every cell holds the routes; their relay counts add up
        stored, differ = routes_of_each(obj, lambda c: [r.to_json() for r in routing.load(c.redis)])
        relays = add_relays([st for _c, st in read_up(obj, lambda c: routing.relay_states(
            c.redis, obj.settings), "its relay counts")[0]])
    else:
        stored = [r.to_json() for r in routing.load(obj.client.redis)]
        relays = routing.relay_states(obj.client.redis, obj.settings)
    routes = [*stored, _default(obj)]
    if differ:
        click.echo(safe(f"drain: {differ}"), err=True)
    if as_json:
        emit({"routes": routes, "relays": relays, **({"cells_agree": not differ} if obj.multi else {})})
        return
    table = Table(title="routes")
    for column in ("for", "relay", "fallbacks"):
        table.add_column(column)
    for r in routes:
        table.add_row(cell(f"{r['kind']} {r['name']}"), cell(str(r["relay"])), cell(", ".join(r["fallbacks"]) or "-"))
    out.print(table)
    states = Table(title="relays")
    for column in ("relay", "breaker", "handed", "no session", "at once"):
        states.add_column(column)
    for name, st in relays.items():
        until = st["open_until"]
        refusing = st.get("refusing")
        state = f"OPEN until {when(until)}" if isinstance(until, float) else "closed"
        state += f"; refusing everything: {refusing['reply']}" if isinstance(refusing, dict) else ""
        states.add_row(cell(name), cell(state), str(st["handed"]), str(st["failed"]), str(st["concurrency"] or "-"))
    out.print(states)
