"""The status page, /status.json and /metrics over several cells: one Snapshot added up from
each cell's own (drain.observe.cells adds the books, pace, backlog and limits), with a row
per cell, a cell that is down named in it. Only when no cell answers is Redis "down" for
the page. The history chart is the first answering cell's (samples are not aligned across
cells); quarantined ids are shown with their cell (`c1.2f`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import redis

from drain.observe import cells as merge
from drain.observe.model import RECENT, Figures, QuarantineView, Reader, Snapshot
from drain.observe.snapshot import _kind
from drain.settings import Settings
from drain.store.cells import Cell
from drain.store.connection import client_for
from drain.store.store import Store


def _add(dicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dicts:
        for key, value in d.items():
            out[key] = out.get(key, 0) + value
    return out


def _row(cell: Cell, snap: Snapshot | None, error: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"cell": cell.name, "up": snap is not None}  # no address: the page may be public
    if snap is None:
        return {**row, "error": error or ""}
    st = snap.figures.status
    return {**row, **st.books.as_dict(), "balanced": st.books.balanced, "rate_per_s": round(st.rate_per_s, 2)}


def add_snapshots(got: Sequence[tuple[Cell, Snapshot]], rows: list[dict[str, Any]]) -> Snapshot:
    """One snapshot for the cells that answered."""
    figs = [s.figures for _c, s in got]
    figures = Figures(
        read_at=min(f.read_at for f in figs),
        status=merge.add_status([f.status for f in figs], [r["cell"] for r in rows if not r["up"]]),
        counters=_add([f.counters for f in figs]),
        findings=_add([f.findings for f in figs]),
        latency=_add([f.latency for f in figs]),
        shape=merge.add_shapes([f.shape for f in figs], [r["cell"] for r in rows if not r["up"]]),
        limits=merge.add_limits([f.limits for f in figs]),
        intake_paused=any(f.intake_paused for f in figs),
        cells=rows,
    )
    views = [(c, s.quarantine) for c, s in got]
    by_reason = (None if any(q.held_by_reason is None for _c, q in views)
                 else _add([q.held_by_reason or {} for _c, q in views]))
    recent = sorted((dataclasses.replace(r, id=c.qualify(r.id)) for c, q in views for r in q.recent),
                    key=lambda r: -r.quarantined_at)[:RECENT]
    quarantine = QuarantineView(sum(q.held for _c, q in views), by_reason,
                                min(q.scanned_at for _c, q in views), recent)
    return Snapshot(figures, got[0][1].history, quarantine)


class CellsReader:
    """Reader.read over every cell; raises the last Redis error only when no cell answers."""

    def __init__(self, cells: Sequence[Cell], settings: Settings, show_messages: bool, timeout_s: float) -> None:
        self.clients = [client_for(c.url, timeout_s=timeout_s) for c in cells]
        self.readers = [(c, Reader(Store(client, c.settings(settings)), show_messages))
                        for c, client in zip(cells, self.clients, strict=True)]

    def read(self) -> Snapshot:
        got: list[tuple[Cell, Snapshot]] = []
        rows: list[dict[str, Any]] = []
        last: redis.RedisError | None = None
        for cell, reader in self.readers:
            try:
                snap = reader.read()
            except redis.RedisError as exc:
                last = exc
                rows.append(_row(cell, None, _kind(exc)))
                continue
            got.append((cell, snap))
            rows.append(_row(cell, snap, None))
        if not got:
            assert last is not None
            raise last
        return add_snapshots(got, rows)

    def close(self) -> None:
        for client in self.clients:
            client.close()
