"""Every Redis key drain uses, in one place. RQ's own keys (rq:*) are RQ's business."""

from __future__ import annotations

PREFIX = "drain"

# Counters of the books: accepted, delivered, bounced, deleted (hash fields).
BOOKS = f"{PREFIX}:books"
# Message ids are handed out from this counter.
SEQ = f"{PREFIX}:seq"
# Ids waiting for a worker, oldest at the head (list).
READY = f"{PREFIX}:ready"
# Ids given back by dead workers: worked one at a time so a poison message cannot take
# batch-mates down with it (list).
SUSPECT = f"{PREFIX}:suspect"
# Ids swept into quarantine by an operator rule while still on the ready or suspect list;
# the claim script drops them when it meets them (set). Ready count = lists - this set.
SWEPT = f"{PREFIX}:swept"
# Ids claimed by a worker: field id -> owner (hash).
INFLIGHT = f"{PREFIX}:inflight"
# Ids waiting for their next attempt, scored by due time (sorted set).
DEFERRED = f"{PREFIX}:deferred"
# Ids held in quarantine, scored by the time they were put there (sorted set).
QUARANTINE = f"{PREFIX}:quarantine"
# Operator rules that quarantine matching mail: field rule id -> JSON (hash), and the id counter.
RULES = f"{PREFIX}:rules"
RULE_SEQ = f"{PREFIX}:rules:seq"
# Every operator action on quarantine: who, when, what (stream, capped).
AUDIT = f"{PREFIX}:audit"
# Circuit breakers by destination domain: consecutive failures, times opened, open until (hashes).
BREAKER_FAILS = f"{PREFIX}:breaker:fails"
BREAKER_TRIPS = f"{PREFIX}:breaker:trips"
BREAKER_OPEN = f"{PREFIX}:breaker:open"
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
# Counter bumped just before WAIT / WAITAOF, so the wait covers the writes before it.
DURABLE = f"{PREFIX}:durable"

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
