"""Every Redis key drain uses, in one place. RQ's own keys (rq:*) are RQ's business."""

from __future__ import annotations

PREFIX = "drain"

# Counters of the books: accepted, delivered, bounced, deleted (hash fields).
BOOKS = f"{PREFIX}:books"
# Message ids are handed out from this counter.
SEQ = f"{PREFIX}:seq"
# Ids waiting for a worker are kept per tenant and lane (lists, see `lane`): the backlog lane
# (retries, released and bulk-loaded mail, and fresh mail that waited too long) and the fresh
# lane (new mail). Each lane has a ring of its tenants with ready mail (list, see `ring`),
# served by deficit round robin; the Lua prelude (_lib.lua) forms these names the same way.
LANES = ("fresh", "backlog")
# Ready messages per lane: field fresh / backlog -> count (hash).
READY_COUNT = f"{PREFIX}:ready:count"
# The single ready lists (backlog, fresh lane) of a drain from before tenants: housekeeping
# moves what is left on them to the tenants' lists (Store.adopt_legacy).
LEGACY_READY = (f"{PREFIX}:ready", f"{PREFIX}:ready:fresh")
# Every tenant that ever had mail accepted (set): a tenant not in it is unknown.
TENANTS = f"{PREFIX}:tenants"
# Per tenant: DRR weight, rate cap (msgs/s), concurrency cap (hashes keyed by tenant), GCRA
# state of the rate cap (hash), paused tenants (set), and tenants taken off the rings by their
# rate cap, scored by when they may go again (sorted set).
TENANT_WEIGHTS = f"{PREFIX}:tenant:weights"
TENANT_RATES = f"{PREFIX}:tenant:rates"
TENANT_CONCURRENCY = f"{PREFIX}:tenant:concurrency"
TENANT_TAT = f"{PREFIX}:tenant:tat"
PAUSED_TENANTS = f"{PREFIX}:tenant:paused"
TENANT_WAKE = f"{PREFIX}:tenant:wake"
# Queued mail by tenant (hash tenant -> count), kept with the backlog shape.
TENANT_SHAPE = f"{PREFIX}:shape:tenant"
# Counts claims, to give the backlog lane its guaranteed share (string).
LANE_TICK = f"{PREFIX}:lane:tick"
# When each enqueue chunk was accepted: last id of the chunk scored by time (sorted set),
# so that fresh mail that waited too long can be moved to the backlog lane by id.
SEQ_TIME = f"{PREFIX}:seq:time"
# Ids given back by dead workers: worked one at a time so a poison message cannot take
# batch-mates down with it (list).
SUSPECT = f"{PREFIX}:suspect"
# Ids swept into quarantine by an operator rule while still on the ready or suspect list;
# the claim script drops them when it meets them (set). Ready count = lists - this set.
SWEPT = f"{PREFIX}:swept"
# Of the swept ids an operator's action took off a tenant's ready lane: id -> "lane|tenant"
# (hash), so `drain tenant list` counts them out at once; an id the claim has passed (no
# longer in SWEPT) is a stale entry, pruned by the listing (drain/ops/tenants.py).
SWEPT_LANE = f"{PREFIX}:swept:lane"
# Ids claimed by a worker: field id -> owner (hash).
INFLIGHT = f"{PREFIX}:inflight"
# A token naming this Redis to the workers' local journals (drain/store/localjournal.py).
INSTANCE = f"{PREFIX}:instance"
# Ids waiting for their next attempt, scored by due time (sorted set).
DEFERRED = f"{PREFIX}:deferred"
# Ids of the deferred set held without an attempt, by why (sorted sets, scored like it):
# for their domain's booked send time, or by an open circuit breaker. The rest of the
# deferred set was deferred by the relay (a 4xx or no answer).
HELD_RATE = f"{PREFIX}:held:rate"
HELD_BREAKER = f"{PREFIX}:held:breaker"
# Ids held in quarantine, scored by the time they were put there (sorted set).
QUARANTINE = f"{PREFIX}:quarantine"
# Operator rules that quarantine matching mail: field rule id -> JSON (hash), and the id counter.
RULES = f"{PREFIX}:rules"
RULE_SEQ = f"{PREFIX}:rules:seq"
# Every operator action: who, when, what, why (stream, capped): quarantine, rules, rates,
# pauses, breakers, bulk actions (drain/ops/audit.py reads it).
AUDIT = f"{PREFIX}:audit"
# Circuit breakers by destination domain: consecutive failures, times opened, open until (hashes).
BREAKER_FAILS = f"{PREFIX}:breaker:fails"
BREAKER_TRIPS = f"{PREFIX}:breaker:trips"
BREAKER_OPEN = f"{PREFIX}:breaker:open"
# Relays refusing everything (drain.worker.storm): relay name -> JSON {"reply", "at", "bounced"}.
RELAY_STORM = f"{PREFIX}:relay:storm"
# Queued mail by destination domain and minute of acceptance: "domain|minute" -> count
# (hash), what `drain backlog` shapes; quarantine findings by reason code (hash); delivery
# latency histogram: upper bound in seconds (or "inf") -> count, and "sum" (hash).
SHAPE = f"{PREFIX}:shape"
FINDINGS = f"{PREFIX}:findings"
LATENCY = f"{PREFIX}:latency"
# Samples of the books over time, newest first (list of JSON), for the status page chart.
HISTORY = f"{PREFIX}:history"
# Recent bounces: id, sender, recipients, reply (stream, capped).
BOUNCES = f"{PREFIX}:bounces"
# Samples of the delivered counter over time, newest first (list of "ts delivered").
PACE = f"{PREFIX}:pace"
# Global delivery rate setting (string, messages per second) and its GCRA state.
RATE = f"{PREFIX}:rate"
RATE_STATE = f"{PREFIX}:rate:tat"
# Present while delivery is paused (accepting continues).
PAUSED = f"{PREFIX}:paused"
# Burst: seconds of rate that may go at once (string).
BURST = f"{PREFIX}:burst"
# Per destination domain: operator rate caps (msgs/s), adaptive effective rates and the
# time of their last increase, concurrency caps, GCRA state of bookings and of actual
# sends (hashes keyed by domain).
DOMAIN_RATES = f"{PREFIX}:domain:rates"
DOMAIN_EFFECTIVE = f"{PREFIX}:domain:effective"
DOMAIN_RAISED = f"{PREFIX}:domain:raised"
DOMAIN_CONCURRENCY = f"{PREFIX}:domain:concurrency"
DOMAIN_TAT = f"{PREFIX}:domain:tat"
DOMAIN_SENT = f"{PREFIX}:domain:sent"
# Paused domains, and domains that have parked mail (sets).
PAUSED_DOMAINS = f"{PREFIX}:domain:paused"
PARKED_DOMAINS = f"{PREFIX}:domain:parked"
# Per domain, the id of the fresh message parked last (hash): fresh mail parked after it goes
# in right behind it, so parked fresh mail keeps its order ahead of parked backlog mail.
PARKED_FRESH_LAST = f"{PREFIX}:domain:parked:fresh-last"
# Ids just moved back from a parked list, allowed past the mail still parked (set).
UNPARKED = f"{PREFIX}:unparked"
# Present while intake is paused: the SMTP ingress answers 421 (delivery goes on).
INTAKE_PAUSED = f"{PREFIX}:intake:paused"
# Held by whichever worker runs housekeeping this round.
HOUSEKEEPING_LOCK = f"{PREFIX}:housekeeping"
# Pauses with their why, who and until when: "delivery", "intake" or "domain:NAME" -> JSON
# {reason, actor, since, until} (hash). The pause itself is PAUSED, INTAKE_PAUSED (which
# expire by themselves for `drain pause --for`) or PAUSED_DOMAINS (lapsed by housekeeping).
PAUSES = f"{PREFIX}:pauses"
# Where the lifetime scan of queued mail goes on from: "deferred" -> ZSCAN cursor,
# "parked:DOMAIN" -> list offset (hash); and the lock that spaces its rounds.
LIFETIME_CURSOR = f"{PREFIX}:lifetime:cursor"
LIFETIME_LOCK = f"{PREFIX}:lifetime:lock"
# Counter bumped just before WAIT / WAITAOF, so the wait covers the writes before it.
DURABLE = f"{PREFIX}:durable"
# The name (c0, c1, ...) a Redis has as a cell, set by the first drain command that used it
# as one: a DRAIN_REDIS_URL listing it under another name (cells in another order, or one
# Redis listed twice under two spellings) is refused, as its ids would name other messages.
CELL_NAME = f"{PREFIX}:cell"

# Routes to relays by destination domain or tenant: "domain:NAME" / "tenant:NAME" -> JSON list
# of relay URLs, the first the relay, the rest its fallbacks in order (hash); bumped on every
# change so workers reload them (string); concurrency caps of relays by relay name (hash).
ROUTES = f"{PREFIX}:routes"
ROUTES_VERSION = f"{PREFIX}:routes:version"
RELAY_CONCURRENCY = f"{PREFIX}:relay:concurrency"
# Per relay name: messages (destination groups) it gave a reply about, and times it gave no
# usable session (refused, timed out, TLS, AUTH) (hashes).
RELAY_HANDED = f"{PREFIX}:relay:handed"
RELAY_FAILED = f"{PREFIX}:relay:failed"

# Every move of a message, as events (stream; fields in drain/store/events.py), trimmed by
# age and length. Its lookup index hangs off the same name: EVENTS:ix:DAY:BUCKET (strings of
# 8-byte records, see events_index and _lib.lua's lib.event).
EVENTS = f"{PREFIX}:events"

# RQ queue that carries batch jobs.
RQ_QUEUE = "drain"
# Every key (and pub/sub channel) RQ keeps, for drain's ACL rules (drain.acl).
RQ_PATTERN = "rq:*"


def message(msg_id: str) -> str:
    """Hash holding one message: raw bytes, envelope, timestamps, attempts, verdicts."""
    return f"{PREFIX}:msg:{msg_id}"


def lease(owner: str) -> str:
    """Present while the worker that owns a claim is alive (expires on its own). A lane's owner
    ("<process owner>/<lane>", drain.worker.lanes) lives by its process's lease."""
    return f"{PREFIX}:lease:{owner.split('/', 1)[0]}"


def journal(owner: str) -> str:
    """Deliveries a worker made and has not settled yet, each with what the settle needs
    (drain/store/journal.py; list). A journalled message counts as delivered: the next settle
    of that owner, or the reaper when its lease lapses, settles it so. The lanes of a process
    ("<process owner>/<lane>") share their process's journal, as its lease."""
    return f"{PREFIX}:journal:{owner.split('/', 1)[0]}"


def lane_journal(owner: str) -> str:
    """The journal a lane ("<process owner>/<lane>") of a worker from before the lanes shared
    their process's (session 7) wrote: read by the reaper only, so that such a worker's
    journalled mail, in flight across an upgrade, is settled and not sent again."""
    return f"{PREFIX}:journal:{owner}"


def parked(domain: str) -> str:
    """Mail for a domain that is paused or at its concurrency cap, waiting its turn (list)."""
    return f"{PREFIX}:parked:{domain}"


def busy(domain: str) -> str:
    """Messages being sent to a domain now, scored by when their slot lapses (sorted set)."""
    return f"{PREFIX}:busy:{domain}"


def lease_owner(key: str) -> str:
    return key.rsplit(":", 1)[1]


def smtpd_auth_failures(address: str) -> str:
    """Failed AUTH attempts from one client address, counted by every `drain smtpd` process
    (string counter; expires DRAIN's AUTH window after the first failure)."""
    return f"{PREFIX}:smtpd:authfail:{address}"


def relay_busy(name: str) -> str:
    """Messages being handed to one relay now, scored by when their slot lapses (sorted set)."""
    return f"{PREFIX}:relay:busy:{name}"

def lane(name: str, tenant: str) -> str:
    """A tenant's ready mail in one lane ("fresh" or "backlog"), oldest at the head (list)."""
    return f"{PREFIX}:lane:{name}:{tenant}"


def ring(name: str) -> str:
    """Tenants with ready mail in a lane, served in turn (list); `ring(name) + ":in"` is the
    same as a set, ":join" the tenants asking to join it (set), ":deficit" their DRR credit (hash)."""
    return f"{PREFIX}:ring:{name}"


def tenant_busy(tenant: str) -> str:
    """Messages of a tenant claimed now, scored by when their slot lapses (sorted set)."""
    return f"{PREFIX}:tenant:busy:{tenant}"


def events_index(day: int, bucket: str) -> str:
    """Index records of the events of one day (unix day number) in one hash bucket (2 hex
    digits; 3 in the earlier format): 3-byte tag of the looked-up value + where the event is
    (string, APPENDed)."""
    return f"{EVENTS}:ix:{day}:{bucket}"


def enqueue_mark(token: str) -> str:
    """How many chunks one enqueue call has stored (counter, expires 10 minutes after the
    last): its next chunk, sent before that one answered, stores only behind them all
    (lua/enqueue.lua)."""
    return f"{PREFIX}:enqueue:mark:{token}"
