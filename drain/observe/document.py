"""The /status.json document, from the read model."""

from __future__ import annotations

from typing import Any

from drain.observe.model import View, latency_buckets, waiting


def status_document(view: View) -> dict[str, Any]:
    """The /status.json document."""
    snap = view.snapshot
    doc: dict[str, Any] = {
        "generated_at": round(view.now, 3),
        "redis": {"up": view.up, "figures_at": round(snap.figures.read_at, 3) if snap else None,
                  "down_since": view.down_since, "error": view.error},
    }
    if snap is None:
        return {**doc, "status": None, "backlog": None, "limits": None, "waits": None, "latency": None,
                "quarantine": None, "history": []}
    f = snap.figures
    buckets, total, count = latency_buckets(f.latency)
    q = snap.quarantine
    codes = sorted(set(f.findings) | set(q.held_by_reason or {}))
    return {
        **doc,
        "status": {**f.status.as_dict(), "balanced": f.status.books.balanced, "intake_paused": f.intake_paused},
        "backlog": f.shape.as_dict(),
        "limits": f.limits,
        "waits": waiting(f),
        "latency": {"buckets": [[le, n] for le, n in buckets], "sum": round(total, 3), "count": count},
        "quarantine": {
            "held": q.held,
            "by_reason": [{"reason": code, "held": None if q.held_by_reason is None else q.held_by_reason.get(code, 0),
                           "found": f.findings.get(code, 0)} for code in codes],
            "recent": [r.as_dict() for r in q.recent] if view.show_messages else None,
        },
        "history": snap.history,
        # Several cells only: a row per cell, those down with "up": false.
        **({"cells": f.cells} if f.cells else {}),
    }
