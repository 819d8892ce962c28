"""Finding events without scanning the stream: the lookup index that lib.event (_lib.lua)
appends to, read back here.

A value (prefix + text, lowercased ASCII as Lua's string.lower does) hashes with SHA-1 to a
3-byte tag (hex digits 1-6) and a bucket (hex digits 7-8, 256 buckets). Each day's bucket
is a string of 8-byte records: tag, then ms within the day * 8192 + stream sequence (5 bytes;
8191 = that or more). A lookup reads one string per day, keeps the records whose tag matches,
and reads those exact stream entries. Tags collide now and then: callers check the events.

256 buckets, not more: a writer appends once per bucket its records fall in, and an enqueue
of a thousand messages has thousands of records (4,096 buckets made that ~2,200 APPENDs; 256
make it at most 256). Records written with 4,096 buckets (hex digits 7-9, before this
format) are read too until they expire. A delivered event's id record goes to a bucket by
the id's number instead (events.id_bucket: a settle's ids share one): an id's lookup reads
that bucket too. An enqueue call writes all its entries at one place (ms-8191 on, enqueue.lua):
each of its records is tag + that place, and a lookup reads the call's entries together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from drain.store import events, keys

RECORD = 8
_DAY_MS = 86_400_000
_SEQ_MORE = 8191


def _hashed(value: str) -> tuple[bytes, str]:
    digest = hashlib.sha1(value.encode("utf-8", "surrogateescape").lower()).hexdigest()
    return bytes.fromhex(digest[:6]), digest[6:8]


def _legacy_bucket(value: str) -> str:
    """The bucket of a value in the index's earlier format (4,096 buckets)."""
    return hashlib.sha1(value.encode("utf-8", "surrogateescape").lower()).hexdigest()[6:9]


def days(since: float, until: float) -> range:
    """The unix day numbers a time window touches."""
    return range(int(since // 86400), int(until // 86400) + 1)


def matches(blob: bytes, tag: bytes, day: int) -> list[tuple[int, int]]:
    """(ms, sequence) of the records in one day's bucket string whose tag is `tag`."""
    found: list[tuple[int, int]] = []
    at = blob.find(tag)
    while at >= 0:
        if at % RECORD == 0 and at + RECORD <= len(blob):
            spot = int.from_bytes(blob[at + 3:at + RECORD], "big")
            found.append((day * _DAY_MS + (spot >> 13), spot & _SEQ_MORE))
            at = blob.find(tag, at + RECORD)
        else:
            at = blob.find(tag, at + 1)
    return found


def where(client: redis.Redis, values: Sequence[str], day_range: Iterable[int]) -> dict[str, list[tuple[int, int]]]:
    """For each value (prefix + text), where its events are: (ms, sequence), oldest first.
    One GET per day and bucket, shared by the values that fall in the same one."""
    wanted = {v: (*_hashed(v), _legacy_bucket(v)) for v in values}
    numbered = {v: events.id_bucket(v[len(events.BY_ID):]) for v in values if v.startswith(events.BY_ID)}
    also = {v: b for v, b in numbered.items() if b}
    day_list = list(day_range)
    names = sorted({(day, b) for v, (_tag, bucket, legacy) in wanted.items() for day in day_list
                    for b in (bucket, legacy, *([also[v]] if v in also else []))})
    pipe = client.pipeline(transaction=False)
    for day, bucket in names:
        pipe.get(keys.events_index(day, bucket))
    blobs = dict(zip(names, pipe.execute(), strict=True))
    out: dict[str, list[tuple[int, int]]] = {}
    for value, (tag, bucket, legacy) in wanted.items():
        spots: list[tuple[int, int]] = []
        for day in day_list:
            for name in (bucket, legacy, *([also[value]] if value in also else [])):
                blob = blobs.get((day, name))
                if isinstance(blob, bytes) and blob:
                    spots.extend(matches(blob, tag, day))
        out[value] = sorted(set(spots))
    return out


def read(client: redis.Redis, spots: Iterable[tuple[int, int]]) -> list[dict[str, Any]]:
    """The events at these places (gone ones are skipped), oldest first, without repeats.
    An entry of several messages' events (events.MANY) gives every one of them: callers
    check the events, as they do for colliding tags."""
    places = sorted(set(spots))
    pipe = client.pipeline(transaction=False)
    for ms, seq in places:
        if seq >= _SEQ_MORE:
            pipe.xrange(keys.EVENTS, f"{ms}-{seq}", f"{ms}-18446744073709551615")
        else:
            pipe.xrange(keys.EVENTS, f"{ms}-{seq}", f"{ms}-{seq}")
    docs: dict[tuple[str, str], dict[str, Any]] = {}  # an entry may hold several messages' events
    for reply in pipe.execute() if places else ():
        for doc in events.decode_all(reply):
            docs[(doc["stream_id"], doc["id"])] = doc
    return [docs[k] for k in sorted(docs, key=lambda k: _order(k[0]))]


def _order(stream_id: str) -> tuple[int, int]:
    ms, _sep, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def of_messages(client: redis.Redis, ids: Sequence[str], day_range: Iterable[int]) -> dict[str, list[dict[str, Any]]]:
    """Every kept event of each message, oldest first (checked against the id: tags collide)."""
    spots = where(client, [events.BY_ID + i for i in ids], day_range)
    found = read(client, (s for ss in spots.values() for s in ss))
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for doc in found:
        if doc["id"] in out:
            out[doc["id"]].append(doc)
    return out


def page(client: redis.Redis, start: str, end: str, count: int) -> list[tuple[str, Any]]:
    """One page of the events stream as (stream id, fields) pairs."""
    reply: Any = client.xrange(keys.EVENTS, start, end, count=count)
    return [(sid.decode() if isinstance(sid, bytes) else str(sid), fields) for sid, fields in reply or ()]


def after(stream_id: str) -> str:
    """The smallest stream id after this one (XRANGE's start for the next page)."""
    ms, seq = _order(stream_id)
    return f"{ms}-{seq + 1}"
