"""Which queued messages an operator's action is about: selectors (ids, destination domain,
sender glob, age, state), where each message is now, and the time and duration words the
commands take (`30s`, `15m`, `2h`, `7d`; times are drain.trace.when's).

Reads only: the moves are in drain.ops.actions (act.lua checks each place again).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import redis

from drain.errors import ConfigError, InputError
from drain.message import recipient_domain
from drain.store import books, keys, record, tenancy

# The states a queued message can be in, as `drain show` names them: on a ready lane (or the
# suspect list), deferred by the relay, held for its domain's rate or by a breaker (both in
# the deferred set), parked behind its domain, quarantined (operator holds included). In
# flight is a state too, but no action takes mail a worker holds.
STATES = ("ready", "deferred", "held", "parked", "quarantined")
IN_FLIGHT = "in_flight"
# The place act.lua checks for each state.
PLACE = {"ready": "l", "parked": "l", "deferred": "d", "held": "d", "quarantined": "q"}
PAGE = 1000
# The reason code of mail put on hold by an operator (`drain hold`).
HOLD_CODE = "operator.hold"

# The longest duration a command takes (`pause --for`, `--older-than`): a year. No state of
# drain is meant to last longer (a message lives DRAIN_MAX_LIFETIME, 5 d by default), and a
# pause of `99999999w` would print as a date in year 1918561 and never lapse in practice.
LONGEST_S = 366 * 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$", re.IGNORECASE | re.ASCII)


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `2h`, `7d` or `1w` (ConfigError when it is not one, or
    when it is longer than a year: LONGEST_S)."""
    match = _DURATION.match(text)
    seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()] if match else math.nan
    if not math.isfinite(seconds):
        raise ConfigError(f"a duration looks like 90s, 15m, 2h or 7d; got {text!r}")
    if seconds > LONGEST_S:
        raise ConfigError(f"a duration is at most a year (366d); got {text!r}")
    return seconds


@dataclass(frozen=True)
class Selector:
    ids: tuple[str, ...] = ()
    domain: str | None = None  # any recipient at this domain
    sender: str | None = None  # a glob on the envelope sender, case-insensitive
    older_than_s: float | None = None
    states: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.ids or self.domain or self.sender or self.older_than_s is not None or self.states)

    def describe(self) -> str:
        """The selectors as options, for the audit record."""
        parts = [f"--{name} {value}" for name, value in (("domain", self.domain), ("sender", self.sender),
                                                            ("older-than", self.older_than_s)) if value is not None]
        parts += [f"--state {s}" for s in self.states]
        return " ".join([*parts, *self.ids[:20]] + (["..."] if len(self.ids) > 20 else []))

    @property
    def filters(self) -> bool:
        """Whether it looks at a message's envelope or age (else only at where it is)."""
        return bool(self.domain or self.sender or self.older_than_s is not None)

    def matches(self, envelope: object, accepted: object, now: float) -> bool:
        """Whether a message's stored envelope and acceptance time (raw HMGET values) pass;
        a message whose fields cannot be read passes only selectors that do not read them."""
        if not self.filters:
            return envelope is not None or accepted is not None
        try:
            sender, recipients, *_rest = json.loads(cast(bytes, envelope))
            accepted_at = float(cast(bytes, accepted))
        except (TypeError, ValueError):
            return False
        if not isinstance(sender, str) or not isinstance(recipients, list):
            return False
        if self.domain and not any(recipient_domain(str(r)) == self.domain for r in recipients):
            return False
        if self.sender and not _glob(self.sender).match(sender.lower()):
            return False
        return self.older_than_s is None or now - accepted_at >= self.older_than_s


@functools.cache
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern.lower()))


@dataclass(frozen=True)
class Found:
    id: str
    state: str
    # The tenant's ready lane it is on ("fresh" or "backlog"), when it is on one.
    lane: str = ""

    @property
    def place(self) -> str:
        """Where act.lua checks it: 'lf'/'lb' when on its tenant's fresh/backlog lane."""
        return PLACE[self.state] + self.lane[:1]


def _text(values: list[bytes]) -> list[str]:
    return [books.text(v) for v in values]


def _paged(client: redis.Redis, key: str, listed: bool) -> Iterator[str]:
    """Every member of a list (listed) or sorted set, in order, a page at a time."""
    read = client.lrange if listed else client.zrange
    start = 0
    while True:
        page = _text(cast(list[bytes], read(key, start, start + PAGE - 1)))
        yield from page
        if len(page) < PAGE:
            return
        start += PAGE


def parked_domains(client: redis.Redis, domain: str | None = None) -> list[str]:
    names = sorted(_text(list(cast(set[bytes], client.smembers(keys.PARKED_DOMAINS)))))
    return [d for d in names if domain is None or d == domain]


def candidates(client: redis.Redis, states: tuple[str, ...],
               domain: str | None = None) -> Iterator[tuple[str, str, str]]:
    """(id, state, the tenant's lane it is on or '') of every message in the states, each id
    once (a parked list only for `domain` when given). Ids in the swept set are on their way
    out and left aside."""
    swept = set(_text(list(cast(set[bytes], client.smembers(keys.SWEPT)))))
    seen: set[str] = set()
    held = set(_paged(client, keys.HELD_RATE, False)) | set(_paged(client, keys.HELD_BREAKER, False))
    sources: list[tuple[str, Iterator[str], str]] = []
    if "ready" in states:
        sources += [("ready", _paged(client, keys.lane(lane, t), True), lane)
                    for t in tenancy.names(client) for lane in keys.LANES]
        sources += [("ready", _paged(client, k, True), "") for k in (*keys.LEGACY_READY, keys.SUSPECT)]
    if "deferred" in states or "held" in states:
        sources.append(("deferred", _paged(client, keys.DEFERRED, False), ""))
    if "parked" in states:
        sources += [("parked", _paged(client, keys.parked(d), True), "") for d in parked_domains(client, domain)]
    if "quarantined" in states:
        sources.append(("quarantined", _paged(client, keys.QUARANTINE, False), ""))
    for state, ids, lane in sources:
        for msg_id in ids:
            state_now = "held" if state == "deferred" and msg_id in held else state
            if msg_id in seen or state_now not in states or (PLACE[state_now] == "l" and msg_id in swept):
                continue
            seen.add(msg_id)
            yield msg_id, state_now, lane


def lane_of(client: redis.Redis, msg_id: str) -> str:
    """The tenant's lane a ready message is on: 'fresh' when its tenant's fresh lane holds it,
    '' when the suspect or an old single list does, else 'backlog' (the one place left; the
    backlog lane, the long one, is not searched)."""
    tenant = books.text(cast(bytes | None, client.hget(keys.message(msg_id), record.TENANT)))
    if not tenant:
        return ""
    pipe = client.pipeline(transaction=True)
    for key in (keys.lane("fresh", tenant), keys.SUSPECT, *keys.LEGACY_READY):
        pipe.lpos(key, msg_id)
    fresh, *elsewhere = pipe.execute()
    return "fresh" if fresh is not None else "" if any(p is not None for p in elsewhere) else "backlog"


def state_of(client: redis.Redis, msg_id: str) -> str | None:
    """Where one message is now; None when drain holds no such queued message."""
    pipe = client.pipeline(transaction=True)
    books.ask_places(pipe, msg_id)
    pipe.hget(keys.message(msg_id), record.DOMAIN)
    pipe.exists(keys.message(msg_id))
    inflight, quarantined, deferred, rate, brk, swept, domain, exists = pipe.execute()
    if inflight is not None:
        return IN_FLIGHT
    if quarantined is not None:
        return "quarantined"
    if deferred is not None:
        return "held" if rate is not None or brk is not None else "deferred"
    if not exists or swept:
        return None
    parked = client.lpos(keys.parked(books.text(domain)), msg_id) if domain else None
    return "parked" if parked is not None else "ready"


# How far back the trace is read to tell a finished message from an unknown id: the default
# retention of its events (DRAIN_TRACE_RETENTION), and a day.
FINISHED_LOOKBACK_S = 8 * 86400.0
FINISHED = ("delivered", "bounced", "deleted", "expired")


def _not_queued(client: redis.Redis, ids: list[str], now: float) -> str:
    """Why ids are not there to act on: finished (delivered, bounced, deleted, expired: as
    its trace says), or unknown. A delivered message was "unknown id" to `drain bounce`
    while `drain show` told its story."""
    from drain.store import lookup
    from drain.trace import history

    kept = lookup.of_messages(client, ids[:10], lookup.days(now - FINISHED_LOOKBACK_S, now))
    done = {i: state for i, evs in kept.items() if evs and (state := history.state_after(evs)) in FINISHED}
    unknown = [i for i in ids if i not in done]
    parts = [f"{i} is {state}" for i, state in list(done.items())[:10]]
    if unknown:
        parts.append(f"unknown id: {', '.join(unknown[:10])}")
    return "; ".join(parts) + " (not queued, held or quarantined: nothing to act on)"


def locate(client: redis.Redis, sel: Selector, allowed: tuple[str, ...],
           now: float | None = None) -> tuple[list[Found], dict[str, str]]:
    """The messages the selector picks among the allowed states, oldest place first, and
    those it names that are elsewhere (id -> state: in flight, or not a state the action
    takes). An id drain does not hold is an InputError, before anything is changed."""
    now = time.time() if now is None else now
    states = tuple(s for s in (sel.states or allowed) if s in allowed)
    skipped: dict[str, str] = {}
    pairs: list[tuple[str, str, str]] = []
    if sel.ids:
        where = {msg_id: state_of(client, msg_id) for msg_id in dict.fromkeys(sel.ids)}
        unknown = [msg_id for msg_id, state in where.items() if state is None]
        if unknown:
            raise InputError(_not_queued(client, unknown, now))
        for msg_id, state in where.items():
            if state in states:
                pairs.append((msg_id, str(state), lane_of(client, msg_id) if state == "ready" else ""))
            else:
                skipped[msg_id] = str(state)
    else:
        pairs = list(candidates(client, states, sel.domain))
    return _matching(client, sel, pairs, now), skipped


def _matching(client: redis.Redis, sel: Selector, pairs: list[tuple[str, str, str]], now: float) -> list[Found]:
    """The (id, state, lane) triples whose message passes the selector, read a page at a time."""
    found: list[Found] = []
    for start in range(0, len(pairs), PAGE):
        page = pairs[start:start + PAGE]
        pipe = client.pipeline(transaction=False)
        for msg_id, _state, _lane in page:
            pipe.hmget(keys.message(msg_id), [record.ENVELOPE, record.ACCEPTED])
        for (msg_id, state, lane), reply in zip(page, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, list) and sel.matches(reply[0], reply[1], now):
                found.append(Found(msg_id, state, lane))
    return found


def in_flight(client: redis.Redis, sel: Selector, now: float | None = None) -> list[str]:
    """Ids a worker holds now that the selector would pick (they are left to the worker)."""
    if sel.ids:
        return []
    ids = _text(cast(list[bytes], client.hkeys(keys.INFLIGHT)))
    now = time.time() if now is None else now
    return [f.id for f in _matching(client, sel, [(i, IN_FLIGHT, "") for i in ids], now)]
