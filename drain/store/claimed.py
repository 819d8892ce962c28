"""What a worker holds and hands back: a claim, a claimed message as read back from Redis (or
what is wrong with it), and the outcome of working it. The moves themselves are in store.py."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Literal

from drain.message import Envelope, envelope_from_headers
from drain.store import record

log = logging.getLogger(__name__)

Kind = Literal["delivered", "bounced", "deferred", "quarantined", "requeue", "vanished", "timeout", "held", "parked",
               "corrupt"]

@dataclass(frozen=True)
class Stored:
    """A claimed message as read back from Redis."""

    id: str
    raw: bytes
    envelope: Envelope
    accepted_at: float
    attempts: int
    # An operator released it with --force: deliver without validating.
    force: bool = False
    # The send time its domain's rate reserved for it (microseconds; 0 = none).
    slot_us: float = 0.0
    # It arrived as fresh mail (it keeps its place ahead of backlog mail while parked).
    fresh: bool = False


@dataclass(frozen=True)
class Damaged:
    """A claimed message whose stored data could not be read back (see `Store.load`)."""

    id: str
    # What was wrong, as quarantine findings (JSON).
    findings: str
    # A readable envelope (JSON) when the raw bytes are intact: it goes to quarantine with
    # them; empty when they are gone: it is dropped and counted as deleted.
    envelope: str

    def outcome(self) -> Outcome:
        return Outcome(self.id, "corrupt", info=self.findings, envelope=self.envelope)


@dataclass(frozen=True)
class Outcome:
    id: str
    kind: Kind
    score: float = 0.0
    info: str = ""
    # For a deferral after a partial delivery: the envelope still to do (JSON); for a hold,
    # why it is held ("rate" or "breaker").
    envelope: str = ""
    # For a delivery: its delivered event's data, made by the worker (events.delivered_data);
    # empty: the settle script makes it.
    event: str = ""


@dataclass(frozen=True)
class Claim:
    ids: list[str]
    paused: bool = False
    wait_s: float = 0.0
    # A suspect (a dead worker held it), to be worked alone.
    isolated: bool = False
    # Ids that came from the fresh lane.
    fresh: set[str] = field(default_factory=set)
    # Some id took a capped tenant's concurrency slot, freed when it is settled: the claim's
    # deliveries are settled at once, not journalled (drain/store/journal.py).
    capped: bool = False


def claimed(found: record.Record | None) -> Stored | Damaged | None:
    """A claimed message for the worker: Damaged when a stored field cannot be read."""
    if found is None:
        return None
    if found.problems or found.raw is None:
        return _damaged(found)
    return Stored(found.id, found.raw, found.envelope, found.accepted_at, found.attempts, force=found.force,
                  slot_us=found.slot_us, fresh=found.fresh)


def _damaged(found: record.Record) -> Damaged:
    """A message to quarantine with its raw bytes and its envelope (as stored if that can be
    read, else from its headers), or to drop when the bytes are gone; logged either way."""
    problems = "; ".join(found.problems)
    findings = json.dumps([{"code": record.CORRUPT, "detail": problems[:1000]}])
    envelope = ""
    if found.raw is not None and record.ENVELOPE not in found.unreadable:
        envelope = found.envelope.to_json()
    elif found.raw is not None:
        try:
            envelope = envelope_from_headers(found.raw).to_json()
        except Exception:  # any bytes must give a verdict: an empty envelope then
            envelope = Envelope("", ()).to_json()
    log.error("message %s has unreadable stored data (%s); %s", found.id, problems[:300],
              "quarantined as store.corrupt" if envelope else "dropped and counted as deleted")
    return Damaged(found.id, findings, envelope)
