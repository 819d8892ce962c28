"""More operator commands over several cells: quarantine rules, quarantine export, circuit
breakers, `drain log --follow` and the `drain drain` session's books.

As in drain.cli.cells: reading commands read every cell that answers, add up and name a
cell that is down on standard error; writing commands apply to every cell that answers and
then name a cell that is down (exit 1), so they can be run again once it is back.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import redis

from drain.cli.cellcmds import _read_each
from drain.cli.cells import CellsDown, apply_all, by_cell, set_rate
from drain.cli.options import Context
from drain.flow import ratelimit
from drain.flow.breaker import Breakers
from drain.intake import rules
from drain.observe import cells as merge
from drain.ops import control
from drain.ops import rules as rule_ops
from drain.ops.export import write_eml, write_mbox
from drain.ops.quarantine import Quarantine
from drain.store.books import Books
from drain.trace import logview

# -- quarantine rules --------------------------------------------------------------------


def rule_plan(obj: Context, probe: rules.Rule) -> rule_ops.Plan:
    """The drafted rule weighed against the queued mail of every cell that answers (a cell
    that is down is named when the rule is added)."""
    plans = [p for _c, p in merge.answered(merge.each(obj.members, lambda c: rule_ops.plan(c.store, probe)))]
    return rule_ops.Plan(probe, sum(p.matched for p in plans), sum(p.queued for p in plans))


def _same(a: rules.Rule, b: rules.Rule) -> bool:
    return (a.sender, a.domain, a.header, a.pattern) == (b.sender, b.domain, b.header, b.pattern)


def rule_add(obj: Context, plan: rule_ops.Plan, note: str) -> tuple[rules.Rule, int]:
    """Add the rule to every cell under one id (the id an identical rule has in some cell
    already, so that running it again after a cell was down adds it there only; else one
    past every cell's highest), sweeping each cell's queued mail; returns the rule and how
    many messages moved in all. A cell that is down: CellsDown once the others have it."""
    held = merge.answered(merge.each(obj.members, lambda c: (rules.load(c.redis), rules.version(c.redis))))
    existing = next((r for _c, (found, _v) in held for r in found if _same(r, plan.rule)), None)
    highest = max([v for _c, (_f, v) in held] + [int(r.id) for _c, (f, _v) in held for r in f], default=0)
    stored = existing or dataclasses.replace(plan.rule, id=str(highest + 1), actor=obj.settings.actor,
                                             created_at=round(time.time(), 3), note=note)
    swept = apply_all(obj, lambda c: rule_ops.add_as(c.store, stored))
    return stored, sum(n for _c, n in swept)


def rule_rows(obj: Context) -> list[dict[str, Any]]:
    """Every cell's rules, merged by id, each with the cells that hold it, oldest first."""
    rows: dict[str, dict[str, Any]] = {}
    for cell_rows in _read_each(obj, lambda cell, c: [(cell.name, r) for r in rules.load(c.redis)], "rules"):
        for name, rule in cell_rows:
            row = rows.setdefault(rule.id, {**_rule_doc(rule), "cells": []})
            row["cells"].append(name)
    return sorted(rows.values(), key=lambda r: int(r["id"]))


def _rule_doc(rule: rules.Rule) -> dict[str, Any]:
    return {"id": rule.id, "sender": rule.sender, "domain": rule.domain, "header": rule.header,
            "pattern": rule.pattern, "actor": rule.actor, "created_at": rule.created_at, "note": rule.note,
            "rule": rule.describe()}


def rule_remove(obj: Context, rule_id: str) -> bool:
    return any(removed for _c, removed in apply_all(obj, lambda c: rules.remove(c.redis, rule_id)))


# -- quarantine export -------------------------------------------------------------------

def export(obj: Context, chosen: list[str], fmt: str, out: Path, force: bool) -> int:
    """Every chosen message's original bytes (ids qualified, from its cell), written once."""
    originals = [dataclasses.replace(o, id=cell.qualify(o.id))
                 for cell, client, local in by_cell(obj, chosen) for o in Quarantine(client.store).originals(local)]
    (write_eml if fmt == "eml" else write_mbox)(originals, out, force)
    return len(originals)


# -- circuit breakers --------------------------------------------------------------------

def breaker_rows(obj: Context, now: float) -> list[dict[str, Any]]:
    """Every cell's breakers merged by name: open when open in a cell (until the latest),
    failures and trips added, and the cells where it is open."""
    rows: dict[str, dict[str, Any]] = {}
    for cell_states in _read_each(obj, lambda cell, c: [(cell.name, Breakers(c.redis, obj.settings).states())],
                                  "breakers"):
        for name, states in cell_states:
            for domain, st in states.items():
                row = rows.setdefault(domain, {"domain": domain, "open": False, "open_until": None, "failures": 0,
                                               "trips": 0, "open_in": []})
                row["failures"] += int(st.get("failures", 0))
                row["trips"] += int(st.get("trips", 0))
                until = st.get("open_until", 0)
                if until > now:
                    row["open"] = True
                    row["open_until"] = max(row["open_until"] or 0.0, until)
                    row["open_in"].append(name)
    return [rows[d] for d in sorted(rows)]


def close_breaker(obj: Context, name: str, note: str) -> int | None:
    """Close the breaker on every cell that has it on record; None when no cell has."""
    found = [n for _c, n in apply_all(obj, lambda c: control.close_breaker(c.store, name, obj.settings.actor, note))
             if n is not None]
    return sum(found) if found else None


# -- drain log --follow ------------------------------------------------------------------

def follow(obj: Context, block_ms: int = 1000) -> Iterator[dict[str, Any]]:
    """Every cell's new events as they are recorded, ids qualified, each round's in time
    order. A cell that stops answering is named once (and again when it answers); the
    others go on."""
    readers = [(cell, logview.Reader(client.redis, obj.settings.trace_retention_s)) for cell, client in obj.members]
    each_ms = max(50, block_ms // len(readers))
    down: set[str] = set()
    while True:
        got: list[dict[str, Any]] = []
        for cell, reader in readers:
            try:
                got += [{**doc, "id": cell.qualify(str(doc["id"]))} for doc in _one_read(reader, each_ms)]
            except redis.RedisError as exc:
                if cell.name not in down:
                    click.echo(f"cell {cell.name} is down, its events are not shown: {exc}", err=True)
                    down.add(cell.name)
                time.sleep(each_ms / 1000)
                continue
            if cell.name in down:
                click.echo(f"cell {cell.name} answers again; its events follow", err=True)
                down.discard(cell.name)
        yield from sorted(got, key=lambda d: float(d["time"]))


def _one_read(reader: logview.Reader, block_ms: int) -> list[dict[str, Any]]:
    """One blocking read of a cell's events (at most block_ms)."""
    rounds = iter((False, True))
    return list(reader.follow(lambda: next(rounds, True), block_ms=block_ms))


# -- drain drain -------------------------------------------------------------------------

class CellsBooks:
    """The cells as `drain drain` sees them (drain.cli.session.Cells): their books added up
    (a cell that does not answer stops the session: its share of the mail cannot be said to
    be done), the global rate set as each cell's share, and tokens on every cell."""

    def __init__(self, obj: Context) -> None:
        self.obj = obj
        self.count = len(obj.members)

    def books(self) -> Books:
        readings = merge.each(self.obj.members, lambda c: c.store.books())
        failed = merge.down(readings)
        if failed:
            named = "; ".join(f"{row['cell']} ({row['error']})" for row in failed)
            raise CellsDown(f"cells {named} did not answer: their mail cannot be counted; run it again once they"
                            " are back")
        return merge.add_books([b for _c, b in merge.answered(readings)])

    def set_rate(self, per_second: float | None) -> None:
        set_rate(self.obj, per_second, None, None, None)

    def rate(self) -> float | None:
        shares = [r for _c, r in apply_all(self.obj, lambda c: ratelimit.get_global(c.redis))]
        return None if any(r is None for r in shares) else sum(r for r in shares if r is not None)

    def top_up(self) -> None:
        apply_all(self.obj, lambda c: control.top_up(c.store))

