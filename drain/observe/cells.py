"""Reading several cells as one drain: each cell is read on its own (a cell that is down is
named, never fatal), then the figures are added up. Books add; the pace adds (cells deliver
side by side); the oldest age and the ETA are the largest of the cells' (cells drain in
parallel, so the last one to finish decides); what holds mail back is the union."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar, cast

import redis

from drain.errors import DrainError
from drain.observe.backlog import DomainShape, Shape
from drain.observe.status import Status
from drain.store.books import Books
from drain.store.cells import Cell
from drain.store.connection import redacted

T = TypeVar("T")
C = TypeVar("C")  # a cell's client (drain.intake.api.Client)


@dataclass(frozen=True)
class Reading(Generic[T]):
    """One cell's answer: a value, or why the cell could not give one."""

    cell: Cell
    value: T | None = None
    error: str | None = None


def each(members: Sequence[tuple[Cell, C]], read: Callable[[C], T]) -> list[Reading[T]]:
    """read() on every cell; a cell that fails (Redis down, refusing) gets its error in one line."""
    out: list[Reading[T]] = []
    for cell, member in members:
        try:
            out.append(Reading(cell, read(member)))
        except (redis.RedisError, DrainError) as exc:
            out.append(Reading(cell, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
    return out


def answered(readings: Sequence[Reading[T]]) -> list[tuple[Cell, T]]:
    # (A cell's answer may be None itself, as "no such breaker here": down means an error.)
    return [(r.cell, cast(T, r.value)) for r in readings if r.error is None]


def down(readings: Sequence[Reading[Any]]) -> list[dict[str, str]]:
    """The cells that did not answer, as JSON rows {"cell", "url", "error"} (passwords hidden)."""
    return [{"cell": r.cell.name, "url": redacted(r.cell.url), "error": r.error or ""}
            for r in readings if r.error is not None]


def add_books(books: Sequence[Books]) -> Books:
    return Books(**{f.name: sum(getattr(b, f.name) for b in books) for f in fields(Books)})


def _largest(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else max((v for v in values if v is not None), default=0.0)


def add_status(statuses: Sequence[Status], down: Sequence[str] = ()) -> Status:
    """One Status for the cells read (a cell whose mail is all done counts with an ETA of 0).
    With cells down (their names): no ETA, their mail is not known, and held_by["*"] says so."""
    parts = ("rate", "breaker", "relay")
    held_by: dict[str, str] = {}
    for st in statuses:
        held_by.update(st.held_by)
    _say_down(held_by, down)
    return Status(
        books=add_books([s.books for s in statuses]),
        oldest_age_s=max((s.oldest_age_s for s in statuses), default=0.0),
        rate_per_s=sum(s.rate_per_s for s in statuses),
        eta_s=None if down else _largest([s.eta_s for s in statuses]),
        breakers_open=sorted({d for s in statuses for d in s.breakers_open}),
        held_by=held_by,
        deferred_by={p: sum(s.deferred_by.get(p, 0) for s in statuses) for p in parts},
        held=next((s.held for s in statuses if s.held is not None), None),
        domains_held=sorted({d for s in statuses for d in s.domains_held}),
        relays=add_relays([s.relays for s in statuses]),
        **add_tenants(statuses),
        eta_at_least=not down and any(s.eta_at_least for s in statuses),
    )


def add_tenants(statuses: Sequence[Status]) -> dict[str, Any]:
    """The tenants over cells: each cell's top tenants with their queued mail added up (a
    tenant in no cell's top is left out), how many tenants have queued mail (at least: a
    tenant with mail in two cells is one), paused in any cell."""
    queued: dict[str, int] = {}
    for st in statuses:
        for name, count in st.tenants:
            queued[name] = queued.get(name, 0) + count
    shown = max((len(st.tenants) for st in statuses), default=0)
    top = sorted(queued.items(), key=lambda item: (-item[1], item[0]))[:shown]
    return {"tenants": top,
            "tenants_queued": max([len(queued), *(st.tenants_queued for st in statuses)]),
            "tenants_paused": sorted({t for st in statuses for t in st.tenants_paused})}


def add_relays(states: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Relay states added over cells: counts and caps add, a breaker is open if it is in any
    cell, a relay is configured if any cell's routes name it."""
    out: dict[str, dict[str, Any]] = {}
    for cell_states in states:
        for name, st in cell_states.items():
            row = out.setdefault(name, {"handed": 0, "failed": 0, "concurrency": 0, "busy": 0, "open": False,
                                        "open_until": None, "failures": 0, "configured": False})
            for k in ("handed", "failed", "concurrency", "busy", "failures"):
                row[k] += int(st.get(k, 0))
            row["configured"] = row["configured"] or bool(st.get("configured", True))
            if st["open"]:
                row["open"] = True
                row["open_until"] = max(row["open_until"] or 0.0, float(st["open_until"]))
    return out


def status_doc(readings: Sequence[Reading[Status]]) -> dict[str, Any]:
    """`drain status --json` over cells: the summed document, then a row per cell and the
    cells that are down (their mail is not in the sums)."""
    got = answered(readings)
    doc = add_status([st for _c, st in got], [d["cell"] for d in down(readings)]).as_dict()
    doc["cells"] = [{"cell": cell.name, **st.books.as_dict(), "balanced": st.books.balanced,
                     "rate_per_s": round(st.rate_per_s, 2), "oldest_age_s": round(st.oldest_age_s, 3)}
                    for cell, st in got]
    doc["cells_down"] = down(readings)
    return doc


def add_shapes(shapes: Sequence[Shape], down: Sequence[str] = ()) -> Shape:
    """One backlog shape: each domain's counts added across cells, its ETA the largest (none,
    and held_by["*"] saying why, with cells down)."""
    merged: dict[str, DomainShape] = {}
    etas: dict[str, list[float | None]] = {}
    for sh in shapes:
        for d in sh.domains:
            entry = merged.setdefault(d.domain, DomainShape(d.domain))
            entry.total += d.total
            entry.by_age = [a + b for a, b in zip(entry.by_age, d.by_age, strict=True)]
            entry.held_by = entry.held_by or d.held_by
            entry.eta_at_least = entry.eta_at_least or d.eta_at_least
            etas.setdefault(d.domain, []).append(d.eta_s)
    for name, entry in merged.items():
        entry.eta_s = None if entry.held_by else _largest(etas[name])
    held_by: dict[str, str] = {}
    for sh in shapes:
        held_by.update(sh.held_by)
    _say_down(held_by, down)
    ordered = sorted(merged.values(), key=lambda d: (-d.total, d.domain))
    return Shape(ordered, sum(d.total for d in ordered), None if down else _largest([sh.eta_s for sh in shapes]),
                 held_by, any(sh.eta_at_least for sh in shapes))


def _say_down(held_by: dict[str, str], down: Sequence[str]) -> None:
    if down:
        why = f"cell {', '.join(down)} down: {'its' if len(down) == 1 else 'their'} mail not counted"
        held_by["*"] = f"{held_by['*']}; {why}" if "*" in held_by else why


def _sum_rates(rates: list[object]) -> float | None:
    """The sum of the cells' rates; unlimited (None) if any cell is unlimited."""
    if any(not isinstance(r, (int, float)) for r in rates):
        return None
    return sum(float(r) for r in rates if isinstance(r, (int, float)))


def add_limits(shown: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """ratelimit.show() of every cell as one: the global rate and each domain's cap added up
    (each cell holds its share), a pause anywhere shown; the rest as the first cell has it."""
    domains: dict[str, dict[str, Any]] = {}
    for one in shown:
        for name, d in one["domains"].items():
            domains.setdefault(name, dict(d))
    for name, merged in domains.items():
        mine = [one["domains"].get(name) or {} for one in shown]
        merged["rate"] = _sum_rates([d.get("rate") for d in mine])
        merged["paused"] = any(d.get("paused") for d in mine)
    return {**shown[0], "global": _sum_rates([one["global"] for one in shown]),
            "paused": any(one["paused"] for one in shown), "domains": domains}
