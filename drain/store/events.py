"""Events: what happened to a message, recorded in the same atomic step as the move itself.

Stored as entries of one stream (keys.EVENTS) with three short fields, so that entries share
their field names and stay small: `e` the kind's code (KINDS), `i` the message id, `d` a
JSON array of the kind's fields in the order KINDS gives (trailing ones may be left out).
The entry's stream id is the event's time (the Redis server's clock, in ms).

Each event is also indexed so that a trace needs no scan (drain/store/lookup.py): by its
message id always, and by the values given when it is recorded (the BY_* prefixes + value).

How a Lua script records an event (the prelude _lib.lua is in front of every script):

    -- KEYS: pass keys.EVENTS; ARGV: pass *tracer_args(settings) (retention, most kept)
    local tr = lib.tracer(KEYS[k], ARGV[a], ARGV[a + 1])      -- once per run; nil = off
                                    -- (a 4th argument true gathers index writes until lib.recorded)
    lib.event(tr, 'D', id, {actor, reason})                    -- 'D' = deleted
    lib.event(tr, 'r', id, data_json, {'r:bob@example.org'})   -- with lookup values
    return lib.recorded(tr)   -- {first, last} stream ids, for DRAIN_EVENT_LOG (and it
                              -- writes gathered index records: required when gathering)

A script that records many events per run (settle.lua, deliver.lua) makes its tracer with
lib.untrimmed(stream, retention) instead: no clock read and no trim per event; it then calls
lib.trim(tr, oldest_kept(settings, now), most kept), which trims on about one run in ten.

The index keys (keys.events_index) are derived from the stream key inside the script.
Operator actions record `released`, `deleted`, `flushed` with {actor, reason}, `held` with
{domain, why, actor, reason} and `bounced` with {reply, recipients, actor, reason} (use ''
for a field that does not apply). After the script, pass its lib.recorded reply to
eventlog.write_span(client, settings, span) so DRAIN_EVENT_LOG gets the lines too.

In a Python MULTI/EXEC (a redis-py pipeline with transaction=True):

    pipe = client.pipeline(transaction=True)
    ...the move...
    record(pipe, store.scripts, settings, [Event("D", msg_id, [actor, reason])])
    replies = pipe.execute()   # the record's reply (the span) is where it was queued

`record` queues the event script (event.lua) in the same transaction as the move.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline

from drain.settings import Settings
from drain.store import keys
from drain.store.scripts import Scripts

# Stream entry fields. An entry of several messages' events of one kind (a settle's
# deliveries, lib.event_batch) has MANY, a JSON array of [id, data] pairs, instead of ID and DATA.
KIND, ID, DATA, MANY = "e", "i", "d", "m"

# Kind code -> (event name, names of its data fields in order).
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "r": ("received", ("source", "size", "message_id", "sender", "recipients", "tenant")),
    "q": ("quarantined", ("codes",)),
    "h": ("held", ("domain", "why", "actor", "reason")),
    "p": ("parked", ("domain", "why")),
    "f": ("deferred", ("reply", "attempt", "next_attempt")),
    "d": ("delivered", ("reply", "attempt", "delay_s")),
    "b": ("bounced", ("reply", "recipients", "actor", "reason")),
    "x": ("expired", ("reply", "attempt")),
    "R": ("released", ("actor", "reason")),
    "D": ("deleted", ("actor", "reason")),
    "F": ("flushed", ("actor", "reason")),
}
CODES = {name: code for code, (name, _fields) in KINDS.items()}
NAMES = tuple(name for name, _fields in KINDS.values())

# Prefixes of indexed values: message id (always), recipient address, recipient domain,
# sender, Message-ID. Values are indexed lowercased (ASCII only, as Lua's string.lower).
BY_ID, BY_RECIPIENT, BY_DOMAIN, BY_SENDER, BY_MESSAGE_ID = "i:", "r:", "d:", "s:", "m:"

# Received events an enqueue writes to one stream entry (enqueue.lua's PER_ENTRY); the
# entries of one enqueue call share one place in the lookup index (lookup.py).
RECEIVED_PER_ENTRY = 50

# Longest reply or header text kept in an event.
TEXT_MAX = 300

_END_OF_HEADERS = re.compile(rb"\n\r?\n")
_LINE = re.compile(rb"[^\r\n]*")


def tracer_args(settings: Settings) -> list[str | int]:
    """The two ARGVs a script's lib.tracer takes: retention seconds (0 = off), most kept."""
    return [int(settings.trace_retention_s) if settings.trace else 0, settings.trace_max_events]


def oldest_kept(settings: Settings, now: float) -> str:
    """The oldest events stream id (milliseconds) the retention keeps at `now`, for a script
    that trims the stream itself (lib.trim)."""
    return f"{(now - settings.trace_retention_s) * 1000:.0f}"


def delivered_data(reply: str, attempt: int, delay_s: float) -> str:
    """The data of a delivered event as JSON (reply, attempt, delay_s), made by the worker so
    that the settle script does not: as the script made it (the reply cut to TEXT_MAX)."""
    return json.dumps([reply[:TEXT_MAX], attempt, math.floor(max(0.0, delay_s) * 1000) / 1000], separators=(",", ":"),
                      ensure_ascii=False)


def message_id(raw: bytes) -> str:
    """The Message-ID header's value (first line, stripped, capped), '' when there is none;
    read from the header block (up to the first empty line; a regex finds its end: two
    bytes.find calls for CRLF CRLF and LF LF scanned the whole of a large LF message first,
    ~20 µs at 20 KB), cheaply enough for every enqueue: the first line that starts with
    `message-id:` in any case, as `^message-id:` with IGNORECASE and MULTILINE would find it."""
    end = _END_OF_HEADERS.search(raw)
    head = raw[:end.start() if end else min(len(raw), 65536)]
    # Found in the lowercased block by bytes.find: that regex tried the name at every byte.
    at = (b"\n" + head).lower().find(b"\nmessage-id:")
    if at < 0:
        return ""
    value = _LINE.match(head, at + len(b"message-id:"))
    assert value is not None  # matches the empty string too
    return value.group().decode("utf-8", "replace").strip()[:TEXT_MAX]


@dataclass(frozen=True)
class Event:
    """One event to record: kind code, message id, data fields in order, lookup values."""

    kind: str
    id: str
    data: Sequence[Any]
    values: Sequence[str] = field(default_factory=tuple)


def received(msg_id: str, raw: bytes, sender: str, recipients: Sequence[str], source: str,
             tenant: str = "") -> Event:
    """The received event of a message, indexed by recipient, recipient domain, sender, Message-ID."""
    mid = message_id(raw)
    values = [BY_SENDER + sender] if sender else []
    domains: set[str] = set()
    for rcpt in dict.fromkeys(r.lower() for r in recipients):
        values.append(BY_RECIPIENT + rcpt)
        domain = rcpt.rpartition("@")[2]
        if domain and domain not in domains:
            domains.add(domain)
            values.append(BY_DOMAIN + domain)
    if mid:
        values.append(BY_MESSAGE_ID + mid)
    data: list[Any] = [source, len(raw), mid, sender, list(recipients)]
    if tenant:
        data.append(tenant)
    return Event("r", msg_id, data, values)


def id_bucket(msg_id: str) -> str | None:
    """The lookup index's bucket of a delivered event's id record, by the id's number, when
    the id is one drain makes (hex): 'n' and 2 hex digits, one bucket for each run of 256
    ids. A settle's ids are mostly a claim's, numbers close together: their records go to
    one or two buckets (one APPEND each) instead of one per id. lookup.py reads it beside
    the value's hash bucket. None for any other id (its hash bucket then)."""
    if not 0 < len(msg_id) <= 16 or msg_id.strip("0123456789abcdef"):
        return None
    return f"n{(int(msg_id, 16) >> 8) & 0xFF:02x}"


def delivered_record(msg_id: str) -> bytes:
    """The index record of a delivered event's id as deliver.lua and the journal take it:
    its bucket (id_bucket, else the hash bucket), then its 3-byte tag."""
    bucket, tag = index_record(BY_ID + msg_id)
    by_number = id_bucket(msg_id)
    return (by_number.encode() if by_number else bucket) + tag


@functools.lru_cache(maxsize=8192)  # senders and domains come back message after message
def index_record(value: str) -> tuple[bytes, bytes]:
    """A lookup value (prefix + text) as the enqueue script takes it: its bucket (SHA-1 hex
    digits 7-8) and its 3-byte tag (digits 1-6) of the lowercased value, as lib.event forms
    them in Lua (lookup.py reads them)."""
    digest = hashlib.sha1(value.encode("utf-8", "surrogateescape").lower()).digest()
    return _BUCKET_NAMES[digest[3]], digest[:3]


_BUCKET_NAMES = [b"%02x" % n for n in range(256)]  # a bucket's two hex digits by its byte


def received_parts(raw: bytes, sender: str, recipients: Sequence[str], source: str,
                   tenant: str, pair_json: str = "", mid: str | None = None,
                   seen: set[str] | None = None) -> tuple[str, list[tuple[bytes, bytes]]]:
    """A message's received event for the enqueue script (lua/enqueue.lua), but for its id:
    its data (JSON) and the index records (bucket, tag) of its lookup values, those of
    `received` in its order. Made for every message enqueued, so in one pass: the values that
    come back message after message (sender, domains) through index_record's cache, those of
    one message (recipient, Message-ID) hashed directly (a cache miss costs more than a hash).
    `pair_json`, when given, is [sender, recipients] as JSON (the envelope's own JSON without
    its SMTPUTF8 flag): the data is then written around it (~0.3 µs, not ~1.7 to encode).
    `mid`, when given, is message_id(raw) already read (Envelope.message_id: the header scan
    of envelope_from_headers meets it on its way). `seen`, when given, holds the values whose
    records an earlier message of the same enqueue call gave already (a chunk's sender and
    domains): they are left out, and the others added to it."""
    mid = message_id(raw) if mid is None else mid
    once = index_record.__wrapped__
    records: list[tuple[bytes, bytes]] = []
    if seen is None:
        if sender:
            records.append(index_record(BY_SENDER + sender))
        domains: set[str] = set()
        for rcpt in dict.fromkeys([r.lower() for r in recipients]):
            records.append(once(BY_RECIPIENT + rcpt))
            domain = rcpt.rpartition("@")[2]
            if domain and domain not in domains:
                domains.add(domain)
                records.append(index_record(BY_DOMAIN + domain))
    else:  # each value's record once per call: no cache, no hash for a value met before
        values = [BY_SENDER + sender] if sender else []
        for rcpt in dict.fromkeys([r.lower() for r in recipients]):
            values.append(BY_RECIPIENT + rcpt)
            domain = rcpt.rpartition("@")[2]
            if domain:
                values.append(BY_DOMAIN + domain)
        for value in values:
            if value not in seen:
                seen.add(value)
                records.append(once(value))
    if mid and (seen is None or (value := BY_MESSAGE_ID + mid) not in seen):
        records.append(once(BY_MESSAGE_ID + mid))
        if seen is not None:
            seen.add(value)
    if pair_json:
        tail = f",{_string(tenant)}]" if tenant else "]"
        return f"[{_string(source)},{len(raw)},{_string(mid)},{pair_json[1:-1]}{tail}", records
    return _ENCODER.encode([source, len(raw), mid, sender, list(recipients), tenant] if tenant else
                           [source, len(raw), mid, sender, list(recipients)]), records


def quarantined_data(findings: str) -> str:
    """The data (JSON) of the quarantined event of a message held by findings at enqueue."""
    return _json([codes(findings)])


# One encoder for every event: json.dumps with arguments builds a new one each call (~3 µs).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


_string = json.encoder.encode_basestring  # a str as JSON, as _ENCODER writes it (no ASCII escapes)


def _json(data: Sequence[Any]) -> str:
    return _ENCODER.encode(list(data))


def record(target: redis.Redis | Pipeline, scripts: Scripts, settings: Settings, events: Sequence[Event]) -> Any:
    """Record events through the event script; on a transactional pipeline the script runs
    inside its MULTI/EXEC, atomic with the rest of it. Nothing when events are off."""
    if not events or not settings.trace:
        return None
    args: list[str | int] = tracer_args(settings)
    for ev in events:
        args += [ev.kind, ev.id, _json(ev.data), len(ev.values), *ev.values]
    return scripts.event(keys=[keys.EVENTS], args=args, client=target)


def decode_entry(stream_id: bytes | str, fields: dict[bytes, bytes]) -> list[dict[str, Any]]:
    """One stream entry as the event documents `drain log --json` and `drain trace` show,
    {"event", "time", "id", ...its fields}: one, or one per message of an entry of several
    (MANY) in its order; none when it is not a readable event."""
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    kind = fields.get(KIND.encode(), b"").decode("utf-8", "replace")
    if kind not in KINDS:
        return []
    many = fields.get(MANY.encode())
    try:
        ms = int(sid.split("-", 1)[0])
        if many is None:
            pairs: Any = [[fields.get(ID.encode(), b"").decode("utf-8", "replace"), json.loads(
                fields.get(DATA.encode(), b"[]"))]]
        else:
            pairs = json.loads(many)
    except ValueError:
        return []
    if not isinstance(pairs, list):
        return []
    name, names = KINDS[kind]
    out: list[dict[str, Any]] = []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            continue
        doc: dict[str, Any] = {"event": name, "time": ms / 1000, "id": pair[0], "stream_id": sid}
        if isinstance(pair[1], list):
            doc.update((n, v) for n, v in zip(names, pair[1], strict=False) if v not in ("", None) and _fits(n, v))
        out.append(doc)
    return out


_NUMBERS = frozenset({"size", "attempt", "next_attempt", "delay_s"})
_LISTS = frozenset({"recipients", "codes"})


def _fits(name: str, value: Any) -> bool:
    """Whether a stored event field has the type its readers take (a damaged one is left out:
    it costs that field, not the log or the trace)."""
    if name in _NUMBERS:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if name in _LISTS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, str)


def codes(findings: str) -> list[str]:
    """The reason codes of quarantine findings (JSON list of {code, detail})."""
    try:
        found = json.loads(findings)
    except ValueError:
        return []
    return [f["code"] for f in found if isinstance(f, dict) and isinstance(f.get("code"), str)] \
        if isinstance(found, list) else []


def decode_all(entries: Any) -> list[dict[str, Any]]:
    """The readable events of an XRANGE / XREVRANGE reply, in its order."""
    return [doc for sid, fields in entries or () if isinstance(fields, dict)
            for doc in decode_entry(sid, fields)]
