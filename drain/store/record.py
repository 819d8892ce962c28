"""The message record: the fields of a stored message's hash, the one decoder for it, and the
format of the backlog shape's fields.

Nothing read from Redis is trusted: a field that cannot be read is named in the record's
`problems` and left at its default, so a damaged message costs that message only (a worker
quarantines it, see `Store.load`; the read side shows what it can).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from drain.errors import InputError
from drain.message import Envelope
from drain.store import body, keys

# The fields of a message's hash (keys.message), as the Lua scripts write them too.
RAW = "raw"  # the message's bytes
ENVELOPE = "env"  # its envelope (JSON, see Envelope.to_json)
ACCEPTED = "t"  # when it was accepted (unix seconds)
DOMAIN = "dom"  # its destination domain, as the backlog shape counts it
TENANT = "tn"  # the tenant (customer) it belongs to, whose ready list it waits on
ATTEMPTS = "n"  # delivery attempts made: deferrals, and groups done before the rest (narrow.lua)
LAST_REPLY = "last"  # the relay's last reply, or why it is held
HISTORY = "hist"  # the last few attempts (JSON list of {at, n, reply})
PARTLY = "pd"  # flag: some recipients already took it
FORCE = "force"  # flag: an operator released it with --force (deliver without validating)
SLOT = "slot"  # the send time its domain's rate reserved for it (unix seconds)
FRESH = "fr"  # flag: it arrived as fresh mail (it keeps its place while parked)
STRIKES = "strikes"  # times a worker died or timed out holding it
FINDINGS = "why"  # why it is quarantined (JSON list of {code, detail})
QUARANTINED = "qt"  # when it was quarantined (unix seconds)
AUDIT = "audit"  # operator actions on it (JSON list)
STORED_SIZE = "sz"  # the message's own size, when RAW is stored compressed (see body.py)

# What each reader asks for. A worker reads everything it needs to deliver.
CLAIMED = (RAW, ENVELOPE, ACCEPTED, ATTEMPTS, FORCE, SLOT, FRESH, STRIKES, HISTORY, PARTLY)
HELD = (ENVELOPE, FINDINGS, QUARANTINED, ACCEPTED, ATTEMPTS, LAST_REPLY, HISTORY, AUDIT)
WAITING = (ENVELOPE, ATTEMPTS, LAST_REPLY, ACCEPTED, HISTORY, DOMAIN, TENANT)

# Counters stored in a message hash (attempts, strikes) never go past this: HINCRBY must work.
MAX_COUNTER = 2**31
# Stored times (accepted, reserved send time) further ahead than this are damage, not clock skew.
MAX_AHEAD_S = 86400.0
# The reason code of a message whose stored data could not be read back.
CORRUPT = "store.corrupt"

_NUMBERS = (ACCEPTED, SLOT, QUARANTINED)
_COUNTERS = (ATTEMPTS, STRIKES)
_FLAGS = (FORCE, FRESH, PARTLY)
_TEXTS = (DOMAIN, LAST_REPLY, TENANT)
_EMPTY = Envelope("", ())


def shape_field(domain: str, accepted_at: float) -> str:
    """The backlog shape's field for a message: its domain and its minute of acceptance
    (the Lua prelude, _lib.lua, forms the same)."""
    return f"{domain}|{math.floor(accepted_at / 60)}"


def parse_shape_field(name: str) -> tuple[str, int] | None:
    """(domain, minute) of a backlog shape field; None when it is not one."""
    domain, _sep, minute = name.rpartition("|")
    return (domain, int(minute)) if minute.isascii() and minute.isdigit() else None


@dataclass(frozen=True)
class Record:
    """A stored message as read back; fields not asked for, or unreadable, keep their defaults."""

    id: str
    envelope: Envelope = _EMPTY
    raw: bytes | None = field(default=None, repr=False)
    # Length of the raw bytes, when asked for (see `ask`).
    size: int = 0
    accepted_at: float = 0.0
    domain: str = ""
    tenant: str = ""
    attempts: int = 0
    last_reply: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    partly: bool = False
    force: bool = False
    slot_us: float = 0.0
    fresh: bool = False
    strikes: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    quarantined_at: float = 0.0
    audit: list[dict[str, Any]] = field(default_factory=list)
    # What could not be read, and the names of those fields.
    problems: tuple[str, ...] = ()
    unreadable: frozenset[str] = frozenset()

    @property
    def reasons(self) -> list[str]:
        """The findings' reason codes, each once, in order."""
        return list(dict.fromkeys(str(f.get("code", "")) for f in self.findings))


def shown(value: bytes | str) -> str:
    """A short, printable sample of a stored value, for findings and logs."""
    text = value if isinstance(value, str) else value[:40].decode("utf-8", "backslashreplace")
    return ascii(text[:40])


def _number(value: bytes, most: float) -> float | None:
    """A finite number from 0 to most stored as text."""
    try:
        number = float(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return number if math.isfinite(number) and 0 <= number <= most else None


def _counter(value: bytes) -> int | None:
    try:
        number = int(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return number if 0 <= number < MAX_COUNTER else None


def _json_list(value: bytes) -> list[dict[str, Any]] | None:
    """The objects of a stored JSON list (other items are passed over); None when not a list."""
    try:
        found = json.loads(value)
    except ValueError:
        return None
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else None


def _field(name: str, value: bytes, latest: float) -> tuple[str, Any] | str:
    """(attribute, value) of one stored field, or what is wrong with it."""
    if name == ENVELOPE:
        try:
            return "envelope", Envelope.from_json(value.decode("utf-8"))
        except (UnicodeDecodeError, InputError):
            return f"field env is not a valid envelope: {shown(value)}"
    if name in _NUMBERS:
        number = _number(value, latest)
        if number is None:
            return f"field {name} is not a usable number: {shown(value)}"
        return {ACCEPTED: "accepted_at", SLOT: "slot_us", QUARANTINED: "quarantined_at"}[name], (
            number * 1e6 if name == SLOT else number)
    if name in _COUNTERS:
        count = _counter(value)
        if count is None:
            return f"field {name} is not a usable count: {shown(value)}"
        return ("attempts" if name == ATTEMPTS else "strikes"), count
    if name in _FLAGS:
        if value not in (b"0", b"1"):
            return f"field {name} is not a flag: {shown(value)}"
        return {FORCE: "force", FRESH: "fresh", PARTLY: "partly"}[name], value == b"1"
    if name in (HISTORY, FINDINGS, AUDIT):
        items = _json_list(value)
        if items is None:
            return f"field {name} is not a JSON list: {shown(value)}"
        return {HISTORY: "history", FINDINGS: "findings", AUDIT: "audit"}[name], items
    if name in _TEXTS:
        return {DOMAIN: "domain", TENANT: "tenant"}.get(name, "last_reply"), value.decode("utf-8", "replace")
    return "raw", value


def decode(msg_id: str, names: Sequence[str], values: list[bytes | None] | Exception,
           size: int = 0) -> Record | None:
    """The one decoder: a record from the values of HMGET names (in that order); None when
    the message is gone."""
    if isinstance(values, Exception):
        problem = f"the message key cannot be read as a hash: {values}"
        return Record(msg_id, problems=(problem,), unreadable=frozenset(names))
    stored = dict(zip(names, values, strict=True))
    # Gone: no envelope and no raw bytes (of those asked for; else nothing at all).
    identity = [name for name in (RAW, ENVELOPE) if name in stored] or list(stored)
    if all(stored[name] is None for name in identity):
        return None
    latest = time.time() + MAX_AHEAD_S
    attributes: dict[str, Any] = {"size": size}
    problems: list[str] = []
    unreadable: set[str] = set()
    for name in names:
        value = stored[name]
        if value is None:
            if name in (RAW, ENVELOPE, ACCEPTED):
                problems.append(f"field {name} is missing")
                unreadable.add(name)
            continue
        if name == STORED_SIZE:  # read by ask(size=True); decoded here it replaced the body with its size
            continue
        if name == RAW:
            try:
                attributes["raw"] = body.unpack(value)
            except body.BodyError as exc:  # kept as stored: evidence for the quarantine
                attributes["raw"] = value
                problems.append(str(exc))
            continue
        decoded = _field(name, value, latest)
        if isinstance(decoded, str):
            problems.append(decoded)
            unreadable.add(name)
        else:
            attributes[decoded[0]] = decoded[1]
    if FINDINGS in unreadable:
        attributes["findings"] = [{"code": CORRUPT, "detail": "stored findings unreadable"}]
    return Record(msg_id, **attributes, problems=tuple(problems), unreadable=frozenset(unreadable))


def ask(pipe: redis.client.Pipeline, msg_id: str, names: Sequence[str], size: bool = False) -> int:
    """Queue the reads of one record on a pipeline; returns how many replies they take."""
    pipe.hmget(keys.message(msg_id), list(names))
    if size:
        pipe.hstrlen(keys.message(msg_id), RAW)
        pipe.hget(keys.message(msg_id), STORED_SIZE)
    return 3 if size else 1


def answer(msg_id: str, names: Sequence[str], replies: Sequence[Any], size: bool = False) -> Record | None:
    """Decode the replies `ask` queued for one record."""
    length = replies[1] if size and isinstance(replies[1], int) else 0
    if size and isinstance(replies[2], bytes) and replies[2].isdigit():
        length = int(replies[2])  # a compressed body: its own size, not the stored one
    return decode(msg_id, names, replies[0], length)


def fetch(client: redis.Redis, ids: Sequence[str], names: Sequence[str],
          size: bool = False) -> list[Record | None]:
    """Read and decode records in one round trip (not a snapshot: a pipeline, no MULTI)."""
    pipe = client.pipeline(transaction=False)
    step = 0
    for msg_id in ids:
        step = ask(pipe, msg_id, names, size)
    replies = pipe.execute(raise_on_error=False)
    return [answer(msg_id, names, replies[i * step:(i + 1) * step], size) for i, msg_id in enumerate(ids)]
