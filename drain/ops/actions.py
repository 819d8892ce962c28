"""Operator actions on queued mail: flush, hold, delete, bounce and release, by selectors.

Each message's move is one step of act.lua (release: release.lua), atomic with the books and
audited with the actor and the reason. Mail a worker holds (in flight) is left alone and
reported: its worker settles it within a batch, and acting on it too would count it twice
(the action can be run again once it has settled).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from drain.message import Envelope
from drain.ops import quarantine
from drain.ops.control import top_up
from drain.ops.select import STATES, Found, Selector, in_flight, locate
from drain.store import eventlog, events, keys, record
from drain.store.store import AUDIT_KEPT, BOUNCES_KEPT, Store
from drain.worker import dsn

# The states each action takes mail from (its default when no --state is given).
ALLOWED: dict[str, tuple[str, ...]] = {
    "flush": ("deferred", "held"),
    "hold": ("ready", "deferred", "held", "parked"),
    "delete": STATES,
    "bounce": STATES,
    "release": ("quarantined",),
}
# Messages per act.lua call.
PAGE = 500
# What a sender is told of an administrative bounce (the operator's reason stays internal:
# it is in the audit log and the bounces stream, not in mail to the sender).
ADMIN_REPLY = "554 5.0.0 returned to the sender by the mail system's administrator"


@dataclass
class Done:
    """What an action found and did."""

    action: str
    ids: list[str]  # matched (what moved, or would on a dry run)
    moved: int = 0
    dry_run: bool = False
    # Ids named that are elsewhere (id -> state), and matching mail in flight, left alone.
    skipped: dict[str, str] = field(default_factory=dict)
    in_flight: list[str] = field(default_factory=list)
    # release: ids kept in quarantine because they still fail validation.
    still_failing: dict[str, list[str]] = field(default_factory=dict)
    reports: int = 0

    def doc(self) -> dict[str, Any]:
        return {"action": self.action, "matched": len(self.ids) + len(self.still_failing), "ids": self.ids,
                "dry_run": self.dry_run,
                "moved": self.moved, "skipped": [{"id": i, "state": s} for i, s in self.skipped.items()],
                "in_flight": self.in_flight, "still_failing": self.still_failing, "reports": self.reports}


def act(store: Store, action: str, pairs: Sequence[tuple[str, str]], actor: str, reason: str,
        cutoff: float | None = None, audit: bool = True) -> list[str]:
    """Run act.lua over (id, place) pairs, a page at a time; returns the ids acted on."""
    done: list[str] = []
    now = f"{time.time():.3f}"
    for start in range(0, len(pairs), PAGE):
        page = pairs[start:start + PAGE]
        reply = store.scripts.act(
            keys=[keys.INFLIGHT, keys.DEFERRED, keys.HELD_RATE, keys.HELD_BREAKER, keys.QUARANTINE, keys.SWEPT,
                  keys.READY_COUNT, keys.BOOKS, keys.SHAPE, keys.FINDINGS, keys.BOUNCES, keys.AUDIT, keys.EVENTS,
                  keys.SWEPT_LANE, *(keys.message(i) for i, _p in page)],
            args=[action, actor, reason, now, "" if cutoff is None else f"{cutoff:.3f}", "1" if audit else "0",
                  AUDIT_KEPT, BOUNCES_KEPT, *events.tracer_args(store.settings), *(x for pair in page for x in pair)],
        )
        eventlog.write_span(store.client, store.settings, reply[:2])
        done += [m.decode() if isinstance(m, bytes) else str(m) for m in reply[2:]]
    return done


@dataclass(frozen=True)
class Report:
    """A report to a sender: the message's id, its bytes and envelope, when it came, and the
    reply per recipient."""

    id: str
    raw: bytes
    envelope: Envelope
    accepted_at: float
    replies: dict[str, str]
    tenant: str = ""  # the original's: the report is booked under it ("": the null sender's "-")


def originals(store: Store, ids: Sequence[str]) -> dict[str, record.Record]:
    """Bytes and envelopes of messages about to be bounced, for their reports (null sender:
    none, a bounce is never bounced)."""
    names = (record.RAW, record.ENVELOPE, record.ACCEPTED, record.TENANT)
    found = record.fetch(store.client, list(ids), names)
    return {r.id: r for r in found if r is not None and r.raw is not None and r.envelope.sender}


def send_reports(store: Store, reports: Sequence[Report], kind: str = "failed") -> int:
    """Queue RFC 3464 reports to the senders, from the null sender; returns how many."""
    items = [(dsn.build(r.raw, r.envelope, r.replies, r.id, store.settings.hostname, r.accepted_at, kind=kind),
              Envelope("", (r.envelope.sender,)), None) for r in reports]
    if items:
        store.enqueue_many(items, source="dsn", tenants=[r.tenant for r in reports])
    return len(items)


def _release(store: Store, found: list[Found], reason: str, sel: Selector, dry_run: bool,
             force: bool) -> tuple[list[str], int, dict[str, list[str]]]:
    # The ids are each message's own record already: the note keeps the reason and the filters.
    note = "; ".join(x for x in (reason, replace(sel, ids=()).describe()) if x)
    done = quarantine.release(store, [f.id for f in found], force=force, dry_run=dry_run, note=note)
    return done.passing, done.released, done.failing


def run(store: Store, action: str, sel: Selector, reason: str = "", dry_run: bool = False,
        force: bool = False) -> Done:
    """Find what the selector picks for the action and, unless dry_run, do it."""
    client, settings = store.client, store.settings
    found, skipped = locate(client, sel, ALLOWED[action])
    busy = in_flight(client, sel) if "ready" in (sel.states or ALLOWED[action]) else []
    done = Done(action, [f.id for f in found], dry_run=dry_run, skipped=skipped, in_flight=busy)
    if action == "release":
        done.ids, done.moved, done.still_failing = _release(store, found, reason, sel, dry_run, force)
        return done
    if dry_run or not found:
        return done
    bounced = action == "bounce" and settings.dsn
    kept = originals(store, done.ids) if bounced else {}
    moved = act(store, action, [(f.id, f.place) for f in found], settings.actor, reason)
    done.ids, done.moved = moved, len(moved)
    if kept:
        done.reports = send_reports(store, [
            Report(i, kept[i].raw or b"", kept[i].envelope, kept[i].accepted_at,
                   dict.fromkeys(kept[i].envelope.recipients, ADMIN_REPLY), kept[i].tenant)
            for i in moved if i in kept])
    if (moved and action == "flush") or done.reports:
        top_up(store)
    return done
