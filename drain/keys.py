"""Every Redis key drain uses, in one place. RQ's own keys (rq:*) are RQ's business."""

from __future__ import annotations

PREFIX = "drain"

# Counters of the books: accepted, delivered, bounced, deleted (hash fields).
BOOKS = f"{PREFIX}:books"
# Message ids are handed out from this counter.
SEQ = f"{PREFIX}:seq"
# Ids waiting for a worker, oldest at the head (list).
READY = f"{PREFIX}:ready"
# Ids claimed by a worker: field id -> owner (hash).
INFLIGHT = f"{PREFIX}:inflight"
# Ids waiting for their next attempt, scored by due time (sorted set).
DEFERRED = f"{PREFIX}:deferred"
# Ids held in quarantine, scored by the time they were put there (sorted set).
QUARANTINE = f"{PREFIX}:quarantine"
# Recent bounces: id, sender, recipients, reply (stream, capped).
BOUNCES = f"{PREFIX}:bounces"
# Samples of the delivered counter over time, newest first (list of "ts delivered").
PACE = f"{PREFIX}:pace"
# Global delivery rate setting (string, messages per second) and its GCRA state.
RATE = f"{PREFIX}:rate"
RATE_STATE = f"{PREFIX}:rate:tat"
# Present while delivery is paused (accepting continues).
PAUSED = f"{PREFIX}:paused"
# Present while intake is paused: the SMTP ingress answers 421 (delivery goes on).
INTAKE_PAUSED = f"{PREFIX}:intake:paused"
# Held by whichever worker runs housekeeping this round.
HOUSEKEEPING_LOCK = f"{PREFIX}:housekeeping"

# RQ queue that carries batch jobs.
RQ_QUEUE = "drain"


def message(msg_id: str) -> str:
    """Hash holding one message: raw bytes, envelope, timestamps, attempts, verdicts."""
    return f"{PREFIX}:msg:{msg_id}"


def lease(owner: str) -> str:
    """Present while the worker that owns a claim is alive (expires on its own)."""
    return f"{PREFIX}:lease:{owner}"


def lease_owner(key: str) -> str:
    return key.rsplit(":", 1)[1]
