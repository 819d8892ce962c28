"""The operator commands over several cells (DRAIN_REDIS_URL listing several Redis).

Reading commands read every cell and add up, with a column or row per cell, and name a cell
that is down (its mail is then missing from the sums, and said to be). Writing commands
(rate, pause, resume, quarantine release/delete) are applied to every cell that answers;
a cell that is down is named on one line and the command exits 1, so it can be run again
once the cell is back. Message ids name their cell (`c1.2f3a`, see drain.store.cells).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable, Iterator
from typing import TypeVar

import click
from rich.table import Table
from rich.text import Text

from drain.cli.options import Context, json_option, pass_ctx
from drain.cli.render import emit, live, out
from drain.cli.terminal import cell as text_cell
from drain.errors import DrainError, InputError
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.observe import cells as merge
from drain.observe.backlog import Shape, shape
from drain.observe.deferred import Deferred, records
from drain.observe.status import Status
from drain.observe.status import read as read_status
from drain.ops import control
from drain.ops.quarantine import Filter, Quarantine, Record
from drain.store.books import Books
from drain.store.cells import Cell, parse_id
from drain.store.store import Store

T = TypeVar("T")
BOOK_ROWS = ("accepted", "ready", "deferred", "in_flight", "delivered", "bounced", "quarantined", "deleted")


class CellsDown(DrainError):
    """A write reached some cells only (exit 1, one line naming the others)."""


def apply_all(obj: Context, action: Callable[[Client], T]) -> list[tuple[Cell, T]]:
    """action() on every cell; CellsDown after the others are done if any cell failed."""
    readings = merge.each(obj.members, action)
    failed = merge.down(readings)
    if failed:
        named = "; ".join(f"{row['cell']} ({row['error']})" for row in failed)
        done = ", ".join(r.cell.name for r in readings if r.error is None) or "none"
        raise CellsDown(f"done on cells {done}; NOT on {named}: run it again once they are back")
    return merge.answered(readings)


def read_up(obj: Context, action: Callable[[Client], T],
            what: str) -> tuple[list[tuple[Cell, T]], list[dict[str, str]]]:
    """action() on every cell, for a command that only reads: the answers of the cells that
    are up, and those down (each named on standard error, `what` it holds left out);
    CellsDown only when no cell answers. (A read that failed on one cell down showed
    nothing at all, while the operator needs what the others hold most.)"""
    readings = merge.each(obj.members, action)
    got, failed = merge.answered(readings), merge.down(readings)
    if not got:
        named = "; ".join(f"{row['cell']} ({row['error']})" for row in failed)
        raise CellsDown(f"no cell answered: {named}")
    for d in failed:
        click.echo(f"cell {d['cell']} is down, {what} is not shown: {d['error']}", err=True)
    return got, failed


def statuses(obj: Context) -> list[merge.Reading[Status]]:
    return merge.each(obj.members, lambda c: read_status(c.store))


def status(obj: Context, as_json: bool, watch_s: float | None) -> None:
    """`drain status` over cells: the sums, a column per cell, and the cells that are down."""
    if as_json:
        emit(merge.status_doc(statuses(obj)))
        return

    def render() -> Table:
        readings = statuses(obj)
        got = merge.answered(readings)
        total = merge.add_status([st for _c, st in got], [d["cell"] for d in merge.down(readings)])
        table = Table(title=f"drain status ({len(readings)} cells)")
        table.add_column("")
        table.add_column("all cells", justify="right")
        for r in readings:
            table.add_column(r.cell.name, justify="right")

        def row(label: str, whole: str, each: Callable[[Status], str]) -> None:
            table.add_row(label, text_cell(whole), *(text_cell(each(r.value)) if r.value is not None else "DOWN"
                                                for r in readings))

        for key in BOOK_ROWS:
            def count(st: Status, k: str = key) -> str:
                return f"{getattr(st.books, k):,}"
            row(key.replace("_", " "), count(total), count)
        row("books balance", "yes" if total.books.balanced else "NO", lambda st: "yes" if st.books.balanced else "NO")
        row("oldest age", f"{total.oldest_age_s:,.1f} s", lambda st: f"{st.oldest_age_s:,.1f} s")
        row("rate", f"{total.rate_per_s:,.1f} msg/s", lambda st: f"{st.rate_per_s:,.1f} msg/s")
        row("eta", total.held_by.get("*", "-") if total.eta_s is None
            else f"{'>=' if total.eta_at_least else ''}{total.eta_s:,.0f} s",
            lambda st: "-" if st.eta_s is None else f"{'>=' if st.eta_at_least else ''}{st.eta_s:,.0f} s")
        row("delivery", total.held.upper() if total.held else "runs",
            lambda st: st.held.upper() if st.held else "runs")
        for d in merge.down(readings):
            table.add_row(Text(f"{d['cell']} DOWN"), Text(d["error"]), *([""] * len(readings)))
        return table

    live(render, watch_s)


def backlog(obj: Context, as_json: bool, top: int) -> Shape:
    """The backlog shape added over the cells; the cells down are named on standard error."""
    readings = merge.each(obj.members, lambda c: shape(c.store))
    for d in merge.down(readings):
        click.echo(f"cell {d['cell']} is down, its mail is not counted: {d['error']}", err=True)
    total = merge.add_shapes([sh for _c, sh in merge.answered(readings)], [d["cell"] for d in merge.down(readings)])
    if as_json:
        doc = total.as_dict()
        doc["cells"] = [{"cell": c.name, "total": sh.total} for c, sh in merge.answered(readings)]
        doc["cells_down"] = merge.down(readings)
        emit(doc)
    return total


# -- quarantine: ids name their cell ---------------------------------------------------

def _qualified(cell: Cell, record: Record) -> Record:
    return dataclasses.replace(record, id=cell.qualify(record.id))


def _merged(obj: Context, read: Callable[[Client], list[T]], key: Callable[[T], float], with_id: Callable[[T, Cell], T],
            what: str, limit: int | None, missed: list[str] | None = None) -> Iterator[T]:
    """Rows of every cell that answers, merged in key order (each cell's own rows come
    sorted), ids with their cell; a cell that is down is named on standard error (and in
    `missed`, for a command that acts on the rows)."""
    readings: list[merge.Reading[list[T]]] = []
    for cell, member in obj.members:
        def rows(c: Client, cell: Cell = cell) -> list[T]:
            return [with_id(r, cell) for r in read(c)]
        readings += merge.each([(cell, member)], rows)
    for d in merge.down(readings):
        click.echo(f"cell {d['cell']} is down, its {what} is not listed: {d['error']}", err=True)
        if missed is not None:
            missed.append(d["cell"])
    ordered = heapq.merge(*(rows for _c, rows in merge.answered(readings)), key=key)
    for count, row in enumerate(ordered):
        if limit is not None and count >= limit:
            return
        yield row


def quarantine_records(obj: Context, flt: Filter, limit: int | None,
                       missed: list[str] | None = None) -> Iterator[Record]:
    """Quarantined mail of every cell that answers, oldest first, ids qualified."""
    return _merged(obj, lambda c: list(Quarantine(c.store).records(flt, limit)), lambda r: r.quarantined_at,
                   lambda r, cell: dataclasses.replace(r, id=cell.qualify(r.id)), "quarantine", limit, missed)


def quarantine_count(obj: Context) -> int:
    return sum(n for _c, n in merge.answered(merge.each(obj.members, lambda c: Quarantine(c.store).count())))


def quarantine_get(obj: Context, msg_id: str) -> Record:
    cell, local = parse_id(msg_id, [c for c, _m in obj.members])
    return _qualified(cell, Quarantine(dict(obj.members)[cell].store).get(local))


def by_cell(obj: Context, ids: list[str]) -> list[tuple[Cell, Client, list[str]]]:
    """Qualified ids grouped by cell, as (cell, its client, ids within it)."""
    cells = [c for c, _m in obj.members]
    groups: dict[Cell, list[str]] = {}
    for msg_id in ids:
        cell, local = parse_id(msg_id, cells)
        groups.setdefault(cell, []).append(local)
    clients = dict(obj.members)
    return [(cell, clients[cell], local) for cell, local in groups.items()]


def quarantine_select(obj: Context, ids: tuple[str, ...], flt: Filter, missed: list[str] | None = None) -> list[str]:
    """The qualified ids named (those in quarantine), or all that the filter matches (the
    cells that did not answer named in `missed`)."""
    if ids:
        return [cell.qualify(i) for cell, client, local in by_cell(obj, list(ids))
                for i in Quarantine(client.store).select(tuple(local), Filter(None, None, None))]
    if flt.empty:
        raise InputError("name message ids, or a filter (--reason, --sender, --domain)")
    return [r.id for r in quarantine_records(obj, flt, None, missed)]


def deferred_rows(obj: Context, limit: int | None, domain: str | None, reason: str | None) -> Iterator[Deferred]:
    """Deferred mail of every cell that answers, soonest next attempt first, ids with their cell."""
    return _merged(obj, lambda c: list(records(c.store, limit, domain=domain, reason=reason)),
                   lambda r: r.next_attempt_at, lambda r, cell: dataclasses.replace(r, id=cell.qualify(r.id)),
                   "deferred mail", limit)


# -- `drain cells` ---------------------------------------------------------------------

@click.command("cells")
@json_option('JSON: [{"cell", "url", "up", "accepted", ..., "used_memory", "maxmemory", "error"?}]')
@pass_ctx
def cells(obj: Context, as_json: bool) -> None:
    """The Redis cells drain is spread over: each one's URL, whether it answers, books and memory."""
    from drain.store.cells import cells_of
    from drain.store.connection import redacted

    if not obj.multi:
        listed = cells_of(obj.settings)
        members = [(listed[0] if listed else Cell("c0", "embedded"), obj.client)]
    else:
        members = obj.members

    def one(c: Client) -> tuple[Books, int, int]:
        memory = c.redis.info("memory")
        return c.store.books(), int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))

    rows = []
    for r in merge.each(members, one):
        row: dict[str, object] = {"cell": r.cell.name, "url": redacted(r.cell.url), "up": r.value is not None}
        if r.value is not None:
            books, used, maximum = r.value
            row.update(books.as_dict(), balanced=books.balanced, used_memory=used, maxmemory=maximum)
        else:
            row["error"] = r.error
        rows.append(row)
    if as_json:
        emit(rows)
        return
    table = Table(title="cells")
    for column in ("cell", "url", "state", "queued", "delivered", "memory"):
        table.add_column(column)
    for row in rows:
        if row["up"]:
            queued = sum(int(str(row[k])) for k in ("ready", "deferred", "in_flight"))
            table.add_row(str(row["cell"]), Text(str(row["url"])), "up", f"{queued:,}", f"{row['delivered']:,}",
                          f"{int(str(row['used_memory'])) / 1e6:,.1f} MB")
        else:
            table.add_row(str(row["cell"]), Text(str(row["url"])), "DOWN", "", "", Text(str(row["error"])))
    out.print(table)


# -- rates: each cell holds its share ----------------------------------------------------

def share(value: float | None, cells: int) -> float | None:
    """A cell's share of a rate: unlimited stays unlimited, 0 (held) stays 0."""
    return None if value is None else value / cells


def set_rate(obj: Context, per_second: float | None, domain: str | None, concurrency: int | None,
             burst: float | None, reason: str = "") -> control.RateSet:
    """`drain rate set` over cells: each gets rate / N (mail is spread evenly, see intake.api)
    and a concurrency of ceil(C / N); the burst, in seconds, is the same everywhere."""
    n = len(obj.members)
    each_concurrency = None if concurrency is None else -(-concurrency // n)
    apply_all(obj, lambda c: control.set_rate(c.store, share(per_second, n), domain, each_concurrency, burst,
                                              reason))
    return control.RateSet(domain, per_second, concurrency, burst)


def rate_shown(obj: Context) -> dict[str, object]:
    """`drain rate show` over cells: the sums (observe.cells.add_limits), each cell's own figures
    under "cells"."""
    got, failed = read_up(obj, lambda c: ratelimit.show(c.redis), "its share of the rates")
    shown = {**merge.add_limits([s for _c, s in got]), "cells": {c.name: s for c, s in got}}
    return {**shown, "cells_down": failed} if failed else shown


def on_each(obj: Context, action: Callable[[Store], T], combine: Callable[[list[T]], T] | None = None) -> T:
    """action(store) on the one Redis, or on every cell (combined, default: the first cell's answer)."""
    if not obj.multi:
        return action(obj.client.store)
    done = [value for _cell, value in apply_all(obj, lambda c: action(c.store))]
    return combine(done) if combine else done[0]
