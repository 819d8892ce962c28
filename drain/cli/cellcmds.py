"""The message, action, pause, audit, route and tenant commands over several cells.

Each helper does on every cell what the one-Redis command does on its Redis, and puts the
answers together: ids are qualified by their cell (`c1.2f3a`), rows read from several cells
are merged in time order with the cell named, and counts add up. A cell that is down is
named: reads go on without it (said on standard error), writes raise CellsDown (exit 1)
once the cells that answer are done (drain.cli.cells.apply_all).
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
import redis

from drain.cli.cells import CellsDown, apply_all, by_cell, read_up, share
from drain.cli.options import Context
from drain.errors import ConfigError, InputError, RedisUnavailable
from drain.intake.api import Client
from drain.observe import cells as merge
from drain.ops import actions, audit, pauses, tenants
from drain.ops.select import Selector
from drain.store.cells import Cell, parse_id
from drain.store.store import Store
from drain.trace import history, logview, where

T = TypeVar("T")


def _read_each(obj: Context, read: Callable[[Cell, Client], list[T]], what: str) -> list[list[T]]:
    """read(cell, client) on every cell; a cell that is down is named on standard error."""
    readings: list[merge.Reading[list[T]]] = []
    for cell, member in obj.members:
        def one(c: Client, cell: Cell = cell) -> list[T]:
            return read(cell, c)
        readings += merge.each([(cell, member)], one)
    for d in merge.down(readings):
        click.echo(f"cell {d['cell']} is down, its {what} is not shown: {d['error']}", err=True)
    return [rows for _c, rows in merge.answered(readings)]


def _with_cell(cell: Cell, row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "cell": cell.name}


# -- trace, log, show ------------------------------------------------------------------

def trace(obj: Context, q: history.Query, now: float) -> list[dict[str, Any]]:
    """`drain trace` over cells: an id goes to its cell; a search runs on every cell, the
    documents merged by their first event's time, ids qualified."""
    retention = obj.settings.trace_retention_s
    if q.id:
        cell, local = parse_id(q.id, [c for c, _m in obj.members])
        with _cell_named(cell, q.id):
            docs = history.trace(dict(obj.members)[cell].redis, dataclasses.replace(q, id=local), now, retention)
        return [{**d, "id": cell.qualify(d["id"])} for d in docs]

    def read(cell: Cell, c: Client) -> list[dict[str, Any]]:
        return [{**d, "id": cell.qualify(d["id"])} for d in history.trace(c.redis, q, now, retention)]

    def first(doc: dict[str, Any]) -> float:
        return float(doc["events"][0]["time"]) if doc["events"] else 0.0

    return list(heapq.merge(*_read_each(obj, read, "mail"), key=first))


def log_since(obj: Context, since: float | None) -> Iterator[dict[str, Any]]:
    """`drain log` over cells: every cell's events merged by time, ids qualified."""
    def events(cell: Cell, c: Client) -> Iterator[dict[str, Any]]:
        for doc in logview.Reader(c.redis, obj.settings.trace_retention_s).since(since):
            yield {**doc, "id": cell.qualify(str(doc["id"]))}

    # Each cell's events are read as the merge asks for them; a cell that fails to answer
    # its first page is named and left out.
    streams: list[Iterator[dict[str, Any]]] = []
    for cell, member in obj.members:
        stream = events(cell, member)
        def head_of(_c: Client, s: Iterator[dict[str, Any]] = stream) -> list[dict[str, Any]]:
            return list(_first(s))
        head = merge.each([(cell, member)], head_of)
        if head[0].value is None:
            click.echo(f"cell {cell.name} is down, its events are not shown: {head[0].error}", err=True)
            continue
        streams.append(_chain(head[0].value, stream))
    return heapq.merge(*streams, key=lambda d: float(d["time"]))


def _first(stream: Iterator[T]) -> Iterator[T]:
    for item in stream:
        yield item
        return


def _chain(head: list[T], rest: Iterator[T]) -> Iterator[T]:
    yield from head
    yield from rest


def show(obj: Context, msg_id: str, with_raw: bool) -> tuple[dict[str, Any], bytes | None]:
    """`drain show ID` over cells: asked of the id's cell, the id shown qualified."""
    cell, local = parse_id(msg_id, [c for c, _m in obj.members])
    with _cell_named(cell, msg_id):
        try:
            doc, data = where.show(dict(obj.members)[cell].redis, local, obj.settings.trace_retention_s,
                                   with_raw=with_raw)
        except InputError:  # it named the id within the cell ("ff" for c0.ff): the one typed is said
            raise InputError(f"unknown message id: {msg_id}") from None
    return {**doc, "id": cell.qualify(str(doc["id"]))}, data


@contextlib.contextmanager
def _cell_named(cell: Cell, msg_id: str) -> Iterator[None]:
    """A Redis error reading one message's cell, said as that cell being down (one line)."""
    try:
        yield
    except redis.RedisError as exc:
        raise RedisUnavailable(f"cell {cell.name} is down, {msg_id} cannot be read now: "
                               f"{type(exc).__name__}: {exc}") from None


# -- flush, bounce, delete, hold, release ------------------------------------------------

def act(obj: Context, action: str, sel: Selector, reason: str, dry_run: bool,
        force: bool) -> tuple[actions.Done, list[dict[str, str]]]:
    """An action over cells: ids go to their cell, selectors run on every cell; what each
    did is added up with ids qualified. Also the cells that did not answer."""
    if sel.ids:
        targets = [(cell, client, dataclasses.replace(sel, ids=tuple(local)))
                   for cell, client, local in by_cell(obj, list(sel.ids))]
    else:
        targets = [(cell, client, sel) for cell, client in obj.members]
    readings: list[merge.Reading[actions.Done]] = []
    for cell, client, chosen in targets:
        def run(c: Client, s: Selector = chosen) -> actions.Done:
            return actions.run(c.store, action, s, reason, dry_run=dry_run, force=force)
        readings += merge.each([(cell, client)], run)
    total = actions.Done(action, [], dry_run=dry_run)
    for cell, done in merge.answered(readings):
        q = cell.qualify
        total.ids += [q(i) for i in done.ids]
        total.moved += done.moved
        total.reports += done.reports
        total.skipped.update((q(i), s) for i, s in done.skipped.items())
        total.in_flight += [q(i) for i in done.in_flight]
        total.still_failing.update((q(i), codes) for i, codes in done.still_failing.items())
    return total, merge.down(readings)


def cells_down(action: str, failed: list[dict[str, str]]) -> CellsDown:
    named = "; ".join(f"{row['cell']} ({row['error']})" for row in failed)
    return CellsDown(f"{action} did not reach cells {named}: run it again once they are back")


# -- pause list, audit -------------------------------------------------------------------

def pause_rows(obj: Context) -> list[dict[str, Any]]:
    """Every cell's pauses, each row with its cell, oldest first."""
    rows = [row for got in _read_each(obj, lambda cell, c: [_with_cell(cell, r) for r in pauses.listing(c.redis)],
                                      "pauses") for row in got]
    return sorted(rows, key=lambda r: (r["since"] or 0.0, r["cell"]))


def audit_rows(obj: Context, since: float | None) -> Iterator[dict[str, Any]]:
    """Every cell's audit log with its cell, merged oldest first."""
    return heapq.merge(*_read_each(obj, lambda cell, c: [_with_cell(cell, e) for e in audit.entries(c.redis, since)],
                                   "audit log"), key=lambda e: float(e["time"]))


# -- routes --------------------------------------------------------------------------------

def routes_of_each(obj: Context, read: Callable[[Client], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], str]:
    """The routes as every cell that answers holds them, and a line saying which cells hold
    other routes than the first ('' when they all agree)."""
    got, _failed = read_up(obj, read, "its routes")
    first_cell, first = got[0]
    def canon(routes: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps(r, sort_keys=True) for r in routes)

    differ = [cell.name for cell, routes in got[1:] if canon(routes) != canon(first)]
    if not differ:
        return first, ""
    return first, (f"routes differ between cells: {', '.join(differ)} hold other routes than {first_cell.name} "
                   "(shown); set them again with `drain route set` to make them agree")


# -- tenants -------------------------------------------------------------------------------

def tenant_rows(obj: Context) -> list[dict[str, Any]]:
    """Every cell's tenants added up: mail and caps add (each cell holds its share of a
    rate or cap); the weight is the largest; paused in any cell is paused."""
    out: dict[str, dict[str, Any]] = {}
    for got in _read_each(obj, lambda _cell, c: tenants.listing(c.store), "tenants"):
        for row in got:
            name = row["tenant"]
            if name not in out:
                out[name] = dict(row)
                continue
            total = out[name]
            for k in ("ready_fresh", "ready_backlog", "queued"):
                total[k] += row[k]
            total["rate"] = None if total["rate"] is None or row["rate"] is None else total["rate"] + row["rate"]
            total["concurrency"] = (total["concurrency"] or 0) + (row["concurrency"] or 0) or None
            total["weight"] = max(total["weight"], row["weight"])
            total["paused"] = total["paused"] or row["paused"]
    return sorted(out.values(), key=lambda r: str(r["tenant"]))


def on_tenant_cells(obj: Context, name: str, change: Callable[[Store, int], None]) -> None:
    """change(store, n) on every cell that knows the tenant (n: the number of cells, for a
    share); a ConfigError when no cell knows it, CellsDown when a cell is down."""
    n = len(obj.members)

    def one(c: Client) -> bool:
        try:
            change(c.store, n)
        except ConfigError as exc:
            if "unknown tenant" not in str(exc):
                raise
            return False
        return True

    known = [ok for _cell, ok in apply_all(obj, one)]
    if not any(known):
        raise ConfigError(f"unknown tenant {name[:80]!a}: no mail of it was ever accepted (see `drain tenant list`)")


def tenant_rate(obj: Context, name: str, per_second: float | None, reason: str = "") -> None:
    """A tenant's rate over cells: each cell gets rate / N, as the global rate."""
    on_tenant_cells(obj, name, lambda store, n: tenants.set_rate(store, name, share(per_second, n), reason))


def tenant_concurrency(obj: Context, name: str, most: int) -> None:
    """A tenant's cap over cells: each cell gets ceil(C / N) (0 stays 0: no cap)."""
    on_tenant_cells(obj, name, lambda store, n: tenants.set_concurrency(store, name, -(-most // n)))
