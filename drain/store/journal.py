"""The delivery journal: a worker's deliveries written with one plain HSET as they happen, and
settled by a script once per claim.

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

An entry (bytes, read by lib.journalled in _lib.lua): the length of the id's index record
(one digit) and the record (events.delivered_record; none when events are off); the id's length in bytes in
decimal, ':', the id; the length of info (recipients refused for good, JSON, or empty), ':',
info; then the delivered event's data (JSON, events.delivered_data).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from drain.store import events, keys
from drain.store.claimed import Outcome

# Most deliveries waiting in a journal: past this many the worker settles them before going on.
JOURNAL_MOST = 100
# A journal lives this long after its first entry: long past any lease, so the reaper finds
# it; it only outlives its worker when every entry in it was stale.
JOURNAL_TTL_S = 86400


def entry(outcome: Outcome, trace: bool) -> bytes:
    """One delivery as its journal entry."""
    msg_id, info = (t.encode("utf-8", "surrogateescape") for t in (outcome.id, outcome.info))
    ix = events.delivered_record(outcome.id) if trace else b""
    head = b"%d%s" % (len(ix), ix)
    return b"%s%d:%s%d:%s%s" % (head, len(msg_id), msg_id, len(info), info,
                                outcome.event.encode("utf-8", "surrogateescape"))


def journalable(outcomes: Sequence[Outcome]) -> bool:
    """Whether outcomes may go to the journal: deliveries whose event data the worker made."""
    return bool(outcomes) and all(o.kind == "delivered" and o.event for o in outcomes)


def write(client: redis.Redis, owner: str, outcomes: Sequence[Outcome], trace: bool, first: bool) -> None:
    """Journal deliveries (one RPUSH; the first write of a journal also sets its lifetime)."""
    key = keys.journal(owner)
    entries = [entry(o, trace) for o in outcomes]
    if not first:
        client.rpush(key, *entries)
        return
    pipe = client.pipeline(transaction=False)
    pipe.rpush(key, *entries)
    pipe.expire(key, JOURNAL_TTL_S)
    pipe.execute()
