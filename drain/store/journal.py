"""The delivery journal: a worker's deliveries written with one plain RPUSH as they happen, and
settled by a script once per claim (the lanes of a process share one: keys.journal).

A settle script call has a large fixed cost in Redis (the call, its arguments, the prelude,
the reply), several times what the moves of one delivered message cost. A worker used to pay
it every DRAIN_SETTLE_EVERY deliveries, the duplicate window. Now, every DRAIN_SETTLE_EVERY
deliveries, it appends them to its journal (keys.journal(owner), a list: an append is O(1)
where a hash field's write scans a small hash's listpack for the field): that write is
what bounds the window, since a journalled message is never delivered again. The owner's
next settle (deliver.lua, settle.lua: at the end of the claim, or once JOURNAL_MOST are
waiting) settles every journalled message it still holds as delivered, with the same books,
figures and events as before, and drops the journal. When the worker dies, the reaper does
the same before it gives the rest of its claim back (reap.lua), so a journalled message is
not redelivered.

An entry (bytes, read by lib.commit_journal in _lib.lua with one struct.unpack): its form
(a byte: FORM, plus 1 when it has info, plus 2 when its piece is the event's data alone),
then the id, its group, the id's index tag (3 bytes: events.delivered_record), its piece of
the delivered events' text, and info if any (recipients refused for good, JSON), each field
but the tag its length (4 bytes, big-endian) and its bytes. The group (`group`) is the id's
index bucket and the message's FIGURES as the worker read them when it claimed it
(Store.load): messages accepted together in one run of 256 ids share it byte for byte, and
the settle reads it and counts its messages out of the backlog shape, their tenant's count
and concurrency slots and into the latency histogram once per group, not per message (the
figures do not change while a worker holds the message). The piece is `["<id>",<data>]`
with data the delivered event's (events.delivered_data), joined as it is into the batched
event; for an id drain did not make, the data alone (the script encodes the id). Entries
of the first form (a flags byte below 16, then the index record, id, info, each figure and
the data: workers of before session 8) are still settled.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

import redis

from drain.store import events, keys
from drain.store.claimed import Outcome

# Most deliveries waiting in a journal: past this many the worker settles them before going on.
# (The lanes of a process share one, each lane's claim of DRAIN_BATCH_SIZE ending with its
# settle: at 100 a second lane's claim made the process settle twice as often.)
JOURNAL_MOST = 250
# The message fields an entry carries: domain, accepted time, tenant (record.py).
FIGURES = (b"dom", b"t", b"tn")
# Most messages whose figures a Store keeps between load and journal.
FIGURES_KEPT = 10_000
# A journal lives this long after its first entry: long past any lease, so the reaper finds
# it; it only outlives its worker when every entry in it was stale.
JOURNAL_TTL_S = 86400
# The first byte of an entry, plus 1 and 2 for its options (the first form's was a flags byte, 0-15).
FORM = 16
# The first byte of a list element holding the entries of one write (`bundle`).
BUNDLE = 20


def group(bucket: bytes, figures: tuple[bytes | None, ...] | None) -> bytes:
    """An entry's group: the index bucket (its length, a byte, then it), then a flags byte (1,
    2, 4: each of FIGURES the message has; 8: not known) and each figure, its length (4 bytes)
    then its bytes."""
    flags, parts = 0, []
    if figures is None or len(figures) != len(FIGURES):
        flags, figures = 8, (None,) * len(FIGURES)
    for k, value in enumerate(figures):
        if value is not None:
            flags |= 1 << k
        parts.append(struct.pack(">I", len(value or b"")) + (value or b""))
    return bytes([len(bucket)]) + bucket + bytes([flags]) + b"".join(parts)


class Written(NamedTuple):
    """An entry as the worker wrote it (its parts: `entry` packs them), kept by the Store until
    its next settle, which passes what it knows of them (known_args)."""
    id: str
    group: bytes
    tag: bytes
    piece: bytes
    form: int
    info: bytes
    bucket: bytes
    figures_known: bool


def written(outcome: Outcome, trace: bool, figures: tuple[bytes | None, ...] | None = None) -> Written:
    """One delivery's journal entry, in parts (figures: its FIGURES fields, None when not known)."""
    bucket, tag = b"", b"\0\0\0"
    if trace:
        record = events.delivered_record(outcome.id)
        bucket, tag = record[:-3], record[-3:]
    data = outcome.event.encode("utf-8", "surrogateescape")
    form = FORM
    if events.id_bucket(outcome.id):  # an id drain made (hex): its JSON text is itself quoted
        piece = b'["' + outcome.id.encode() + b'",' + data + b"]"
    else:
        piece, form = data, form + 2
    info = outcome.info.encode("utf-8", "surrogateescape")
    if info:
        form += 1
    known = figures is not None and len(figures) == len(FIGURES)
    return Written(outcome.id, group(bucket, figures), tag, piece, form, info, bucket, known)


def pack(w: Written) -> bytes:
    """A journal entry's bytes."""
    head = [w.id.encode("utf-8", "surrogateescape"), w.group]
    tail = [w.piece, w.info] if w.info else [w.piece]
    return (bytes([w.form]) + b"".join(struct.pack(">I", len(f)) + f for f in head) + w.tag
            + b"".join(struct.pack(">I", len(f)) + f for f in tail))


def entry(outcome: Outcome, trace: bool, figures: tuple[bytes | None, ...] | None = None) -> bytes:
    """One delivery as its journal entry (figures: its FIGURES fields, None when not known)."""
    return pack(written(outcome, trace, figures))


NOTHING_KNOWN: list[bytes | str | int] = [0, b"", 0, 0, 0, 0]


def known_args(entries: Sequence[Written], trace: bool, elements: int = 0,
               direct: Sequence[Written] = ()) -> list[bytes | str | int]:
    """What deliver.lua takes of the journal entries a worker knows it wrote since its last
    settle (`elements`: the list elements they fill, one per write), in the order written,
    then of `direct` deliveries that are in no journal, settled the same way (lib.commit_known):
    how many in all, their pieces of the event text joined, how many groups and buckets, each
    group and its count, each bucket and its tags, the ids, the elements, how many are direct.
    Nothing known (NOTHING_KNOWN) unless there are two or more, each of the usual form (an id
    drain made, no info, its figures known), each id once; then the script reads every entry
    of the journal, and the caller passes the direct ones as plain deliveries."""
    every = [*entries, *direct]
    if (len(every) < 2 or any(w.form != FORM or not w.figures_known or (trace and not w.bucket) for w in every)
            or len({w.id for w in every}) < len(every)):
        return list(NOTHING_KNOWN)
    entries = every
    groups: dict[bytes, int] = {}
    buckets: dict[bytes, list[bytes]] = {}
    for w in entries:
        groups[w.group] = groups.get(w.group, 0) + 1
        if trace:
            buckets.setdefault(w.bucket, []).append(w.tag)
    return [len(entries), b",".join(w.piece for w in entries) if trace else b"", len(groups), len(buckets),
            *(x for g, count in groups.items() for x in (g, count)),
            *(x for bucket, tags in buckets.items() for x in (bucket, b"".join(tags))),
            *(w.id for w in entries), elements, len(direct)]


def known_ids(args: Sequence[bytes | str | int]) -> list[str]:
    """The ids of known_args's answer (the script takes their message keys too)."""
    return [str(i) for i in args[len(args) - 2 - int(args[0]): len(args) - 2]] if args[0] else []


def unbundle(element: bytes) -> list[bytes]:
    """The entries of one list element of a journal: a bundle's (cut short: those before the
    cut), or the element itself (an entry of an older worker)."""
    if element[:1] != bytes([BUNDLE]):
        return [element]
    return sized(element, 1)[0]


def sized(data: bytes, at: int = 0) -> tuple[list[bytes], int]:
    """The whole length-prefixed pieces (4 bytes, big-endian, then the bytes) of data from
    `at` on, and where the last whole one ends (a piece cut short ends the reading): a
    bundle's entries, the records of a local journal file."""
    found = []
    while at + 4 <= len(data):
        (size,) = struct.unpack_from(">I", data, at)
        if at + 4 + size > len(data):
            break
        found.append(data[at + 4: at + 4 + size])
        at += 4 + size
    return found, at


def bundle(entries: Sequence[bytes]) -> bytes:
    """The entries of one write as one list element (BUNDLE, then each entry's length, 4 bytes,
    and its bytes): a list element costs Redis an allocation and a copy of the listpack it
    joins, about as much for one small entry as for a hundred."""
    return bytes([BUNDLE]) + b"".join(struct.pack(">I", len(e)) + e for e in entries)


def journalable(outcomes: Sequence[Outcome]) -> bool:
    """Whether outcomes may go to the journal: deliveries whose event data the worker made."""
    return bool(outcomes) and all(o.kind == "delivered" and o.event for o in outcomes)


Figures = Sequence[tuple[bytes | None, ...] | None]


def write(client: redis.Redis, owner: str, outcomes: Sequence[Outcome], trace: bool, first: bool,
          figures: Figures | None = None) -> list[Written]:
    """Journal deliveries (one RPUSH; the first write of a journal also sets its lifetime);
    figures: each one's FIGURES as read when claimed, if known. Returns the entries written."""
    return write_many(client, [(owner, outcomes, first, figures)], trace).get(keys.journal(owner), [])


def write_many(client: redis.Redis, journals: Sequence[tuple[str, Sequence[Outcome], bool, Figures | None]],
               trace: bool) -> dict[str, list[Written]]:
    """Journal the deliveries of several owners (owner, outcomes, first, figures: as `write`
    takes them) in one round trip: one RPUSH per journal (the lanes of a process share one).
    Returns the entries written, by journal key."""
    entries: dict[str, list[Written]] = {}
    firsts: set[str] = set()
    for owner, outcomes, first, figures in journals:
        key = keys.journal(owner)
        entries.setdefault(key, []).extend(written(o, trace, f) for o, f in zip(
            outcomes, figures or [None] * len(outcomes), strict=True))
        if first:
            firsts.add(key)
    pipe = client.pipeline(transaction=False)
    for key, found in entries.items():
        if found:
            pipe.rpush(key, bundle([pack(w) for w in found]))
        if key in firsts:
            pipe.expire(key, JOURNAL_TTL_S)
    pipe.execute()
    return entries
