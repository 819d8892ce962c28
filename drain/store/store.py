"""Message state in Redis: every move between states is one atomic step that keeps the books.

A message is in exactly one place: the ready list, the in-flight hash, the deferred set,
the quarantine set, or gone with its count added to delivered, bounced or deleted.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, cast

import redis
from redis.typing import EncodableT, FieldT

from drain.errors import InputError
from drain.message import Envelope, envelope_from_headers
from drain.settings import Settings
from drain.store import body, keys
from drain.store.scripts import Scripts

# A message to enqueue: raw bytes, envelope, and findings (JSON) if it goes straight to quarantine.
Item = tuple[bytes, Envelope, str | None]
Kind = Literal["delivered", "bounced", "deferred", "quarantined", "requeue", "vanished", "timeout", "held", "parked",
               "corrupt"]
# Messages written to Redis per round trip when enqueueing.
ENQUEUE_CHUNK = 1000
# Bounce records kept in the bounces stream (approximately).
BOUNCES_KEPT = 10000
# Pace samples kept (one per housekeeping round, about one a second).
PACE_KEPT = 900
# Counters stored in a message hash (attempts, strikes) never go past this: HINCRBY must work.
MAX_COUNTER = 2**31
# Fields of a queued message read back by workers and by the Lua scripts.
FIELDS = ["raw", "env", "t", "n", "force", "slot", "fr", "strikes", "hist", "pd"]
# Stored times (accepted, reserved send time) further ahead than this are damage, not clock skew.
MAX_AHEAD_S = 86400.0
# The reason code of a message whose stored data could not be read back.
CORRUPT = "store.corrupt"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Books:
    accepted: int
    ready: int
    deferred: int
    in_flight: int
    delivered: int
    bounced: int
    quarantined: int
    deleted: int

    @property
    def balanced(self) -> bool:
        return self.accepted == (
            self.ready
            + self.deferred
            + self.in_flight
            + self.delivered
            + self.bounced
            + self.quarantined
            + self.deleted
        )

    @property
    def queued(self) -> int:
        """Messages still to be worked: ready, deferred or in flight."""
        return self.ready + self.deferred + self.in_flight

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


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


@dataclass(frozen=True)
class Claim:
    ids: list[str]
    paused: bool = False
    wait_s: float = 0.0
    # A suspect (a dead worker held it), to be worked alone.
    isolated: bool = False
    # Ids that came from the fresh lane.
    fresh: set[str] = field(default_factory=set)


def _shown(value: bytes | str) -> str:
    """A short, printable sample of a stored value, for findings and logs."""
    text = value if isinstance(value, str) else value[:40].decode("utf-8", "backslashreplace")
    return ascii(text[:40])


def _number(value: bytes | None, name: str, problems: list[str], required: bool = False,
            most: float = math.inf) -> float:
    """A finite number from 0 to most stored as text (0 when absent and not required)."""
    if value is None:
        if required:
            problems.append(f"field {name} is missing")
        return 0.0
    try:
        number = float(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or not 0 <= number <= most:
        problems.append(f"field {name} is not a usable number: {_shown(value)}")
        return 0.0
    return number


def _counter(value: bytes | None, name: str, problems: list[str]) -> int:
    if value is None:
        return 0
    try:
        number = int(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        number = -1
    if not 0 <= number < MAX_COUNTER:
        problems.append(f"field {name} is not a usable count: {_shown(value)}")
        return 0
    return number


def _json_list(value: bytes) -> bool:
    try:
        return isinstance(json.loads(value), list)
    except ValueError:
        return False


def _envelope(value: bytes | None, problems: list[str]) -> Envelope | None:
    if value is None:
        problems.append("field env is missing")
        return None
    try:
        text = value.decode("utf-8")
        envelope = Envelope.from_json(text)
    except (UnicodeDecodeError, InputError):
        problems.append(f"field env is not a valid envelope: {_shown(value)}")
        return None
    return envelope


def _damaged(msg_id: str, raw: bytes | None, problems: list[str], stored: Envelope | None = None) -> Damaged:
    """A message to quarantine with its raw bytes and its envelope (as stored if that can be
    read, else from its headers), or to drop when the bytes are gone; logged either way."""
    findings = json.dumps([{"code": CORRUPT, "detail": "; ".join(problems)[:1000]}])
    envelope = ""
    if raw is not None and stored is not None:
        envelope = stored.to_json()
    elif raw is not None:
        try:
            envelope = envelope_from_headers(raw).to_json()
        except Exception:  # any bytes must give a verdict: an empty envelope then
            envelope = Envelope("", ()).to_json()
    log.error("message %s has unreadable stored data (%s); %s", msg_id, "; ".join(problems)[:300],
              "quarantined as store.corrupt" if envelope else "dropped and counted as deleted")
    return Damaged(msg_id, findings, envelope)


def _count(key: str, value: bytes | None) -> int:
    """A counter of the books; 0 (logged) when it is not a whole number."""
    try:
        return int(value or 0)
    except ValueError:
        log.error("a counter in %s is not a number: %s; read as 0", key, _shown(value or b""))
        return 0


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class Store:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.scripts = Scripts(client)

    # -- producers -------------------------------------------------------------------

    def enqueue_many(self, items: Iterable[Item], lane: str = "fresh") -> list[str]:
        """Store messages and put them on the ready list; returns their ids in order.

        An item is (raw, envelope, findings): findings (JSON) send the message straight to
        quarantine, as an operator rule does. Each chunk is one MULTI/EXEC, so the books
        balance at every moment.
        """
        ids: list[str] = []
        chunk: list[Item] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= ENQUEUE_CHUNK:
                ids.extend(self._enqueue_chunk(chunk, lane))
                chunk = []
        if chunk:
            ids.extend(self._enqueue_chunk(chunk, lane))
        return ids

    def _enqueue_chunk(self, chunk: Sequence[Item], lane: str) -> list[str]:
        last = int(self.client.incrby(keys.SEQ, len(chunk)))
        ids = [format(n, "x") for n in range(last - len(chunk) + 1, last + 1)]
        now = f"{time.time():.3f}"
        ready: list[str] = []
        shape: dict[str, int] = {}
        minute = int(float(now) // 60)
        pipe = self.client.pipeline(transaction=True)
        for msg_id, (raw, env, why) in zip(ids, chunk, strict=True):
            fields: dict[FieldT, EncodableT] = {**body.fields(raw), "env": env.to_json(), "t": now,
                                                "dom": env.domain}
            if why is None:
                ready.append(msg_id)
                field_name = f"{env.domain}|{minute}"
                shape[field_name] = shape.get(field_name, 0) + 1
            else:
                pipe.hincrby(keys.FINDINGS, "rule.match", 1)
                fields.update(why=why, qt=now)
                pipe.zadd(keys.QUARANTINE, {msg_id: float(now)})
            pipe.hset(keys.message(msg_id), mapping=fields)
        if ready:
            pipe.rpush(keys.FRESH if lane == "fresh" else keys.READY, *ready)
        for field_name, count in shape.items():
            pipe.hincrby(keys.SHAPE, field_name, count)
        pipe.zadd(keys.SEQ_TIME, {ids[-1]: float(now)})
        pipe.hincrby(keys.BOOKS, "accepted", len(ids))
        pipe.execute()
        return ids

    # -- workers ---------------------------------------------------------------------

    def claim(self, owner: str, want: int) -> Claim:
        lease_ms = int(self.settings.lease_ttl_s * 1000)
        reply = self.scripts.claim(
            keys=[keys.READY, keys.INFLIGHT, keys.lease(owner), keys.PAUSED, keys.RATE, keys.RATE_STATE,
                  keys.SUSPECT, keys.SWEPT, keys.FRESH, keys.LANE_TICK, keys.BURST],
            args=[want, owner, lease_ms, self.settings.burst_s, self.settings.backlog_share],
        )
        wait = int(reply[0])
        if wait < 0:
            return Claim([], paused=True)
        if wait > 0:
            return Claim([], wait_s=wait / 1000)
        ids = [_text(i) for i in reply[3:]]
        fresh_count = int(reply[2])
        fresh = set(ids[:fresh_count] if fresh_count >= 0 else ids[len(ids) + fresh_count:])
        return Claim(ids, isolated=bool(int(reply[1])), fresh=fresh)

    def renew(self, owner: str) -> None:
        self.client.set(keys.lease(owner), b"1", px=int(self.settings.lease_ttl_s * 1000))

    def release_lease(self, owner: str) -> None:
        self.client.delete(keys.lease(owner))

    def load(self, ids: Sequence[str]) -> list[Stored | Damaged | None]:
        """Read claimed messages back: None when the data is gone, Damaged when a stored
        field cannot be read (wrong key type, bad number, bad JSON, bytes that are not text)."""
        pipe = self.client.pipeline(transaction=False)
        for msg_id in ids:
            pipe.hmget(keys.message(msg_id), FIELDS)
        out: list[Stored | Damaged | None] = []
        for msg_id, values in zip(ids, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(values, Exception):
                out.append(_damaged(msg_id, None, [f"the message key cannot be read as a hash: {values}"]))
                continue
            raw, env, accepted, attempts, force, slot, fr, strikes, hist, pd = values
            if raw is None and env is None:
                out.append(None)
                continue
            problems: list[str] = []
            envelope = _envelope(env, problems)
            latest = time.time() + MAX_AHEAD_S
            fields = {"t": _number(accepted, "t", problems, required=True, most=latest),
                      "n": _counter(attempts, "n", problems), "slot": _number(slot, "slot", problems, most=latest),
                      "strikes": _counter(strikes, "strikes", problems)}
            for name, flag in (("force", force), ("fr", fr), ("pd", pd)):
                if flag not in (None, b"0", b"1"):
                    problems.append(f"field {name} is not a flag: {_shown(flag)}")
            if hist is not None and not _json_list(hist):
                problems.append(f"field hist is not a JSON list: {_shown(hist)}")
            if raw is None:
                problems.append("field raw is missing")
            else:
                try:
                    raw = body.unpack(raw)
                except body.BodyError as exc:
                    problems.append(str(exc))
            if problems or envelope is None:
                out.append(_damaged(msg_id, raw, problems, envelope))
                continue
            out.append(
                Stored(
                    id=msg_id,
                    raw=raw,
                    envelope=envelope,
                    accepted_at=fields["t"],
                    attempts=int(fields["n"]),
                    force=force == b"1",
                    slot_us=fields["slot"] * 1e6,
                    fresh=fr == b"1",
                )
            )
        return out

    def settle(self, owner: str, outcomes: Sequence[Outcome]) -> tuple[int, int]:
        """Record outcomes atomically; returns (settled, skipped because no longer held)."""
        if not outcomes:
            return (0, 0)
        args: list[str | float] = [owner, f"{time.time():.3f}", BOUNCES_KEPT, self.settings.poison_strikes]
        for o in outcomes:
            args += [o.id, o.kind, o.score, o.info, o.envelope]
        reply = self.scripts.settle(
            keys=[
                keys.INFLIGHT,
                keys.BOOKS,
                keys.READY,
                keys.DEFERRED,
                keys.QUARANTINE,
                keys.BOUNCES,
                keys.SUSPECT,
                keys.PARKED_DOMAINS,
                keys.RATE,
                keys.RATE_STATE,
                keys.SHAPE,
                keys.FINDINGS,
                keys.LATENCY,
                keys.HELD_RATE,
                keys.HELD_BREAKER,
                *(k for o in outcomes for k in (keys.message(o.id),
                                                  keys.parked(o.info) if o.kind == "parked" else keys.message(o.id))),
            ],
            args=args,
        )
        return int(reply[0]), int(reply[1])

    # -- housekeeping ------------------------------------------------------------------

    def held(self) -> dict[str, list[str]]:
        """In-flight ids by owner."""
        owners: dict[str, list[str]] = {}
        for msg_id, owner in self.client.hgetall(keys.INFLIGHT).items():
            owners.setdefault(_text(owner), []).append(_text(msg_id))
        return owners

    def reap_dead(self) -> tuple[int, int]:
        """Give back the messages of every owner whose lease lapsed: (to suspects, to quarantine)."""
        back = poisoned = 0
        why = json.dumps([{"code": "poison.crash", "detail": "a worker died or hung while holding it"}])
        for owner, ids in self.held().items():
            if self.client.exists(keys.lease(owner)):
                continue
            reply = self.scripts.reap(
                keys=[keys.INFLIGHT, keys.SUSPECT, keys.lease(owner), keys.QUARANTINE, keys.SHAPE, keys.FINDINGS,
                      *map(keys.message, ids)],
                args=[owner, self.settings.poison_strikes, f"{time.time():.3f}", why, *ids],
            )
            back += int(reply[0])
            poisoned += int(reply[1])
        return back, poisoned

    def promote_due(self, now: float | None = None, limit: int = 1000) -> int:
        """Move deferred messages that are due back to the ready list."""
        now = time.time() if now is None else now
        total = 0
        while True:
            moved = int(self.scripts.promote(keys=[keys.DEFERRED, keys.READY, keys.HELD_RATE, keys.HELD_BREAKER],
                                             args=[f"{now:.3f}", limit]))
            total += moved
            if moved < limit:
                return total

    def next_due(self) -> float | None:
        """When the soonest deferred message is due (None when none is deferred)."""
        first = cast(list[tuple[bytes, float]], self.client.zrange(keys.DEFERRED, 0, 0, withscores=True))
        return float(first[0][1]) if first else None

    def age_fresh(self, max_age_s: float, now: float | None = None) -> int:
        """Move fresh mail accepted more than max_age_s ago to the backlog lane."""
        cutoff = (time.time() if now is None else now) - max_age_s
        found = cast(list[bytes], self.client.zrevrangebyscore(keys.SEQ_TIME, cutoff, "-inf", start=0, num=1))
        if not found:
            return 0
        self.client.zremrangebyscore(keys.SEQ_TIME, "-inf", cutoff - 86400)
        total = 0
        while True:
            moved = int(self.scripts.age(keys=[keys.FRESH, keys.READY], args=[_text(found[0]), 10000]))
            total += moved
            if moved < 10000:
                return total

    def sample_pace(self, books: Books | None = None) -> None:
        done = (books or self.books()).delivered
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(keys.PACE, f"{time.time():.3f} {done}")
        pipe.ltrim(keys.PACE, 0, PACE_KEPT - 1)
        pipe.execute()

    # -- the books -------------------------------------------------------------------

    def books(self) -> Books:
        """One consistent snapshot (MULTI/EXEC) of every state's count."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hmget(keys.BOOKS, ["accepted", "delivered", "bounced", "deleted", "parked"])
        pipe.llen(keys.READY)
        pipe.llen(keys.FRESH)
        pipe.llen(keys.SUSPECT)
        pipe.scard(keys.SWEPT)
        pipe.zcard(keys.DEFERRED)
        pipe.hlen(keys.INFLIGHT)
        pipe.zcard(keys.QUARANTINE)
        # A key of the wrong type or a counter that is not a number (damaged or planted data)
        # reads as 0 and is logged: the books then show it by not balancing.
        replies = [0 if isinstance(r, redis.ResponseError) else r for r in pipe.execute(raise_on_error=False)]
        counters, ready, fresh, suspect, swept, deferred, in_flight, quarantined = replies
        counters = counters if isinstance(counters, list) else [None] * 5
        accepted, delivered, bounced, deleted, parked = (_count(keys.BOOKS, c) for c in counters)
        return Books(
            accepted=accepted,
            ready=int(ready) + int(fresh) + int(suspect) + parked - int(swept),
            deferred=int(deferred),
            in_flight=int(in_flight),
            delivered=delivered,
            bounced=bounced,
            quarantined=int(quarantined),
            deleted=deleted,
        )

    def pace(self, window_s: float = 30.0) -> float:
        """Delivered messages per second over about the last window_s seconds."""
        samples: list[tuple[float, int]] = []
        try:
            for sample in self.client.lrange(keys.PACE, 0, PACE_KEPT - 1):
                when, done = _text(sample).split()
                if math.isfinite(float(when)):
                    samples.append((float(when), int(done)))
        except (ValueError, redis.ResponseError) as exc:  # damaged samples: no pace rather than no status
            log.error("the pace samples in %s cannot be read (%s); pace shown as 0", keys.PACE, exc)
            return 0.0
        if len(samples) < 2:
            return 0.0
        newest_t, newest_n = float(samples[0][0]), int(samples[0][1])
        if time.time() - newest_t > max(window_s, 10.0):
            return 0.0
        then_t, then_n = newest_t, newest_n
        for t, n in samples[1:]:
            then_t, then_n = float(t), int(n)
            if newest_t - then_t >= window_s:
                break
        dt = newest_t - then_t
        return max(0.0, (newest_n - then_n) / dt) if dt > 0 else 0.0

    def oldest_age_s(self, now: float | None = None) -> float:
        """Age of the oldest message still to be worked (ready head, or earliest deferred)."""
        now = time.time() if now is None else now
        candidates: list[float] = []
        ids: list[bytes] = []
        pipe = self.client.pipeline(transaction=False)
        pipe.lindex(keys.READY, 0)
        pipe.lindex(keys.FRESH, 0)
        pipe.zrange(keys.DEFERRED, 0, 9)
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, bytes):
                ids.append(reply)
            elif isinstance(reply, list):
                ids.extend(reply)
        pipe = self.client.pipeline(transaction=False)
        for msg_id in ids:
            pipe.hget(keys.message(_text(msg_id)), "t")
        for accepted in pipe.execute(raise_on_error=False):
            # A damaged time (or key) is skipped here; the worker that claims it quarantines it.
            if isinstance(accepted, bytes):
                value = _number(accepted, "t", [])
                if value > 0:
                    candidates.append(value)
        return max(0.0, now - min(candidates)) if candidates else 0.0
