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

An entry (bytes, read by lib.journalled in _lib.lua with one struct.unpack): a flags byte,
then seven fields, each its length (4 bytes, big-endian) and its bytes: the id's index record
(events.delivered_record; empty when events are off), the id, info (recipients refused for
good, JSON, or empty), the message's FIGURES as the worker read them when it claimed it
(Store.load), and the delivered event's data (JSON, events.delivered_data). Flags: 1 when
the figures are known, then 2, 4, 8 for each figure the message has. The figures spare the
settle a read of each message; they count it out of the backlog shape, its tenant's count
and its concurrency slot, and do not change while a worker holds the message.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

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


def entry(outcome: Outcome, trace: bool, figures: tuple[bytes | None, ...] | None = None) -> bytes:
    """One delivery as its journal entry (figures: its FIGURES fields, None when not known)."""
    flags, values = 0, [b""] * len(FIGURES)
    if figures is not None and len(figures) == len(FIGURES):
        flags = 1
        for k, value in enumerate(figures):
            if value is not None:
                flags |= 2 << k
                values[k] = value
    fields = (events.delivered_record(outcome.id) if trace else b"", *(t.encode("utf-8", "surrogateescape")
              for t in (outcome.id, outcome.info)), *values, outcome.event.encode("utf-8", "surrogateescape"))
    return bytes([flags]) + b"".join(struct.pack(">I", len(f)) + f for f in fields)


def journalable(outcomes: Sequence[Outcome]) -> bool:
    """Whether outcomes may go to the journal: deliveries whose event data the worker made."""
    return bool(outcomes) and all(o.kind == "delivered" and o.event for o in outcomes)


Figures = Sequence[tuple[bytes | None, ...] | None]


def write(client: redis.Redis, owner: str, outcomes: Sequence[Outcome], trace: bool, first: bool,
          figures: Figures | None = None) -> None:
    """Journal deliveries (one RPUSH; the first write of a journal also sets its lifetime);
    figures: each one's FIGURES as read when claimed, if known."""
    write_many(client, [(owner, outcomes, first, figures)], trace)


def write_many(client: redis.Redis, journals: Sequence[tuple[str, Sequence[Outcome], bool, Figures | None]],
               trace: bool) -> None:
    """Journal the deliveries of several owners (owner, outcomes, first, figures: as `write`
    takes them) in one round trip: one RPUSH per journal (the lanes of a process share one)."""
    entries: dict[str, list[bytes]] = {}
    firsts: set[str] = set()
    for owner, outcomes, first, figures in journals:
        key = keys.journal(owner)
        entries.setdefault(key, []).extend(entry(o, trace, f) for o, f in zip(
            outcomes, figures or [None] * len(outcomes), strict=True))
        if first:
            firsts.add(key)
    pipe = client.pipeline(transaction=False)
    for key, found in entries.items():
        if found:
            pipe.rpush(key, *found)
        if key in firsts:
            pipe.expire(key, JOURNAL_TTL_S)
    pipe.execute()
