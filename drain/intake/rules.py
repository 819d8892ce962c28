"""Operator rules: during an incident, quarantine mail by sender, recipient domain or a
header pattern. A new rule sweeps what is already queued; enqueue and the workers apply
every rule to mail that comes later.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import cast

import redis

from drain.errors import ConfigError
from drain.intake import saferegex
from drain.message import Envelope, domain_key, recipient_domain
from drain.store import keys, tenancy
from drain.store.record import ENVELOPE, RAW, fetch
from drain.store.store import Store

log = logging.getLogger(__name__)

# Longest header pattern accepted; patterns are also run on at most this much header text.
MAX_PATTERN = 200
MAX_FIELD = 320
MAX_HEADER_TEXT = 4096
_HEADERS = BytesHeaderParser(policy=compat32)
SWEEP_CHUNK = 500
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 field name: printable ASCII but the colon


@dataclass(frozen=True)
class Rule:
    id: str
    sender: str | None = None  # glob on the envelope sender, e.g. *@spam.example.com
    domain: str | None = None  # any recipient in this domain
    header: str | None = None  # field name ...
    pattern: str | None = None  # ... and a regex searched in its value(s)
    actor: str = ""
    created_at: float = 0.0
    note: str = ""

    def __post_init__(self) -> None:
        if not (self.sender or self.domain or self.header):
            raise ConfigError("a rule needs --sender, --domain or --header")
        if self.header and not self.pattern:
            raise ConfigError("--header takes 'Name: regex'")
        for what, value in (("sender", self.sender), ("domain", self.domain), ("header", self.header)):
            if value and len(value) > MAX_FIELD:
                raise ConfigError(f"rule {what} is longer than {MAX_FIELD} characters")
        # A name no message can carry made a rule that matched nothing, silently ('Sub ject', 'ex ample.com').
        if self.header and not _FIELD_NAME.fullmatch(self.header):
            raise ConfigError(f"header name {self.header!r} is not a field name (printable ASCII, no spaces or colon)")
        if self.domain and (not self.domain.isprintable() or any(ch in self.domain for ch in " @<>,;")):
            raise ConfigError(f"rule domain {self.domain!r} is not a domain name (no spaces, @, <>, commas)")
        if self.pattern:
            if len(self.pattern) > MAX_PATTERN:
                raise ConfigError(f"header pattern is longer than {MAX_PATTERN} characters")
            saferegex.compile_pattern(self.pattern)  # RE2: linear time, cannot hang

    def describe(self) -> str:
        parts = []
        if self.sender:
            parts.append(f"sender {self.sender}")
        if self.domain:
            parts.append(f"domain {self.domain}")
        if self.header:
            parts.append(f"header {self.header}: /{self.pattern}/")
        return " and ".join(parts)

    def matches(self, raw: bytes, envelope: Envelope) -> bool:
        if self.sender and not fnmatch.fnmatchcase(envelope.sender.lower(), self.sender.lower()):
            return False
        if self.domain:
            domain = domain_key(self.domain)
            if not any(recipient_domain(r) == domain for r in envelope.recipients):
                return False
        if self.header and self.pattern:
            try:
                values = _HEADERS.parsebytes(raw[:65536]).get_all(self.header, [])
            except Exception:
                return False
            if not any(saferegex.search(self.pattern, str(v)[:MAX_HEADER_TEXT]) for v in values):
                return False
        return True

    def findings(self) -> str:
        return json.dumps([{"code": "rule.match", "detail": f"rule {self.id}: {self.describe()}"}])


def parse_header(text: str) -> tuple[str, str]:
    name, colon, pattern = text.partition(":")
    if not colon or not name.strip() or not pattern.strip():
        raise ConfigError("--header takes 'Name: regex', e.g. 'Subject: ^invoice [0-9]+$'")
    return name.strip(), pattern.strip()


def version(client: redis.Redis) -> int:
    return int(cast(bytes | None, client.get(keys.RULE_SEQ)) or 0)


def load(client: redis.Redis) -> list[Rule]:
    raw = cast(dict[bytes, bytes], client.hgetall(keys.RULES))
    rules = []
    for value in raw.values():
        try:
            rules.append(Rule(**json.loads(value)))
        except (ConfigError, TypeError, ValueError) as exc:  # never let one stored rule stop the workers
            log.error("ignoring a stored rule drain cannot use: %s", exc)
    return sorted(rules, key=lambda r: int(r.id))


def add(client: redis.Redis, actor: str, note: str = "", **match: str | None) -> Rule:
    rule_id = str(int(client.incr(keys.RULE_SEQ)))
    rule = Rule(id=rule_id, actor=actor, created_at=round(time.time(), 3), note=note, **match)
    client.hset(keys.RULES, rule_id, json.dumps(asdict(rule)))
    return rule


def remove(client: redis.Redis, rule_id: str) -> bool:
    removed = bool(client.hdel(keys.RULES, rule_id))
    if removed:
        client.incr(keys.RULE_SEQ)
    return removed


def first_match(rules: list[Rule], raw: bytes, envelope: Envelope) -> Rule | None:
    return next((r for r in rules if r.matches(raw, envelope)), None)


def _queued_ids(client: redis.Redis) -> Iterator[list[str]]:
    """Ids of waiting messages, in chunks: ready list, suspect list, deferred set."""
    for _lane, ids in _queued_where(client):
        yield ids


def _queued_where(client: redis.Redis) -> Iterator[tuple[str, list[str]]]:
    """As _queued_ids, each chunk with the tenant's ready lane it is on ("fresh|acme", as
    act.lua notes it in keys.SWEPT_LANE), or "" (suspect, parked, deferred)."""
    parked = [keys.parked(d.decode()) for d in cast(set[bytes], client.smembers(keys.PARKED_DOMAINS))]
    lanes = [(keys.lane(lane, t), f"{lane}|{t}") for t in tenancy.names(client) for lane in keys.LANES]
    for key, where in (*lanes, (keys.SUSPECT, ""), *((p, "") for p in parked)):
        start = 0
        while True:
            chunk = cast(list[bytes], client.lrange(key, start, start + SWEEP_CHUNK - 1))
            if not chunk:
                break
            yield where, [c.decode() for c in chunk]
            start += SWEEP_CHUNK
    offset = 0
    while True:
        chunk = cast(list[bytes], client.zrange(keys.DEFERRED, offset, offset + SWEEP_CHUNK - 1))
        if not chunk:
            break
        yield "", [c.decode() for c in chunk]
        offset += SWEEP_CHUNK


def _readable(store: Store, ids: list[str]) -> Iterator[tuple[str, bytes, Envelope]]:
    """(id, raw bytes, envelope) of the messages that can be read (the rest are left to the
    worker that claims them, which quarantines damage)."""
    for found in fetch(store.client, ids, (RAW, ENVELOPE)):
        if found is not None and found.raw is not None and not found.unreadable:
            yield found.id, found.raw, found.envelope


def sweep(store: Store, rule: Rule) -> int:
    """Move waiting messages that match into quarantine; returns how many moved."""
    moved = 0
    for where, ids in _queued_where(store.client):
        matched = [msg_id for msg_id, raw, envelope in _readable(store, ids) if rule.matches(raw, envelope)]
        if matched:
            moved += store.sweep(matched, rule.findings())
            if where:
                _note_lane(store.client, matched, where)
    return moved


def _note_lane(client: redis.Redis, ids: list[str], where: str) -> None:
    """Note the ready lane of the swept ids still waiting on it (as act.lua does for an
    operator's action), so `drain tenant list` leaves them out at once; a note of an id
    the claim passed meanwhile is stale and pruned by the listing."""
    still = cast(list[int], client.smismember(keys.SWEPT, ids))
    waiting = {msg_id: where for msg_id, s in zip(ids, still, strict=True) if s}
    if waiting:
        client.hset(keys.SWEPT_LANE, mapping=waiting)  # type: ignore[arg-type]


# A rule needs the operator's explicit confirmation (`rule add --yes-all`) when it would
# catch more than this share of the queued mail (and at least CONFIRM_MIN messages), or
# when its sender pattern matches any address at all.
CONFIRM_SHARE = 0.5
CONFIRM_MIN = 10
_PROBES = (Envelope("probe-1@one.example", ("a@one.example",)), Envelope("z9@two.example.net", ("b@two.example.net",)))


def reach(store: Store, rule: Rule) -> tuple[int, int]:
    """(queued messages the rule matches, queued messages), without moving any."""
    matched = queued = 0
    for ids in _queued_ids(store.client):
        for _msg_id, raw, envelope in _readable(store, ids):
            queued += 1
            matched += rule.matches(raw, envelope)
    return matched, queued


def catches_everyone(rule: Rule) -> bool:
    """True for a sender-only rule whose pattern matches unrelated addresses ('*', '*@*')."""
    return not (rule.domain or rule.header) and all(rule.matches(b"", probe) for probe in _PROBES)


def needs_confirmation(rule: Rule, matched: int, queued: int) -> bool:
    return catches_everyone(rule) or (matched >= CONFIRM_MIN and matched > CONFIRM_SHARE * queued)
