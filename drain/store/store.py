"""Message state in Redis: every move between states is one atomic step that keeps the books.

A message is in exactly one place: the ready list, the in-flight hash, the deferred set,
the quarantine set, or gone with its count added to delivered, bounced or deleted.
The message hash's fields and their decoder are in record.py, the reading of the counts
in books.py, and the scripts of the moves in lua/ (with their shared prelude, _lib.lua).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, cast

import redis

from drain.message import Envelope
from drain.settings import Settings
from drain.store import books, eventlog, events, journal, keys, record
from drain.store.books import Books as Books
from drain.store.claimed import Claim as Claim
from drain.store.claimed import Damaged as Damaged
from drain.store.claimed import Kind as Kind
from drain.store.claimed import Outcome as Outcome
from drain.store.claimed import Stored as Stored
from drain.store.claimed import claimed
from drain.store.enqueue import ENQUEUE_CHUNK as ENQUEUE_CHUNK
from drain.store.enqueue import Enqueue
from drain.store.enqueue import Item as Item
from drain.store.journal import Written
from drain.store.localjournal import LocalJournal
from drain.store.scripts import Scripts

log = logging.getLogger(__name__)

# Bounce records kept in the bounces stream (approximately).
BOUNCES_KEPT = 10000
# Audit entries kept in the audit stream of operator actions on quarantine (approximately).
AUDIT_KEPT = 100_000


class Store:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.scripts = Scripts(client)
        # What load read of each claimed message's figures fields (journal.FIGURES), until
        # its delivery is journalled: the journal entry carries them to the settle.
        self.figures: dict[str, tuple[bytes | None, ...]] = {}
        # The journal entries this process wrote and has not settled yet, by journal key: its
        # next deliver.lua call says what they hold (journal.known_args), sparing their reading.
        self.written: dict[str, list[Written]] = {}
        self.elements: dict[str, int] = {}  # (the list elements of `written`, by journal key)
        self.written_lock = threading.Lock()
        # A worker process's journal on local disk (drain/store/localjournal.py; set by its runtime).
        self.local: LocalJournal | None = None

    # -- producers -------------------------------------------------------------------

    def enqueue_many(self, items: Iterable[Item], lane: str = "fresh",
                     tenants: Iterable[str] | None = None, source: str | Sequence[str] = "api",
                     stored: list[str] | None = None, before_chunk: Callable[[], None] | None = None) -> list[str]:
        """Store messages and put them on the ready list; returns their ids in order.

        An item is (raw, envelope, findings): findings (JSON) send the message straight to
        quarantine, as an operator rule does. Each chunk of ENQUEUE_CHUNK is one script call
        (see drain/store/enqueue.py), so the books balance at every moment; its received (and
        quarantined) events are in it too. `tenants` gives each item's tenant, in order (an
        empty one, or none given: the sender's domain); source (api, cli, smtp CLIENT-ADDRESS;
        one for all, or one per item) says where the mail came from. `stored`, when given, gets
        each chunk's ids once Redis holds it (what is queued when an error stops the enqueue
        part way); `before_chunk` is called before each chunk is sent (the memory guard).
        """
        # The clock is read through this module's `time` (tests accept mail "in the past" by moving it).
        return Enqueue(self.client, self.settings, self.scripts, lambda: time.time()).many(
            items, lane, tenants, source, stored if stored is not None else [], before_chunk)

    # -- workers ---------------------------------------------------------------------

    def claim(self, owner: str, want: int, suspects: bool = True) -> Claim:
        """Claim up to `want` ready ids for `owner`; with `suspects` False, never a suspect."""
        lease_ms = int(self.settings.lease_ttl_s * 1000)
        reply = self.scripts.claim(
            keys=[keys.ring("backlog"), keys.INFLIGHT, keys.lease(owner), keys.PAUSED, keys.RATE, keys.RATE_STATE,
                  keys.SUSPECT, keys.SWEPT, keys.ring("fresh"), keys.LANE_TICK, keys.BURST, keys.TENANT_WEIGHTS,
                  keys.TENANT_RATES, keys.TENANT_TAT, keys.PAUSED_TENANTS, keys.TENANT_WAKE, keys.READY_COUNT,
                  keys.TENANT_CONCURRENCY],
            args=[want, owner, lease_ms, self.settings.burst_s, self.settings.backlog_share,
                  "1" if suspects else "0"],
        )
        wait = int(reply[0])
        if wait < 0:
            return Claim([], paused=True)
        if wait > 0:
            return Claim([], wait_s=wait / 1000)
        ids = [books.text(i) for i in reply[3:]]
        fresh_count = int(reply[2])
        fresh = set(ids[:fresh_count] if fresh_count >= 0 else ids[len(ids) + fresh_count:])
        flags = int(reply[1])
        return Claim(ids, isolated=bool(flags & 1), fresh=fresh, capped=bool(flags & 2))

    def renew(self, owner: str) -> None:
        self.client.set(keys.lease(owner), b"1", px=int(self.settings.lease_ttl_s * 1000))

    def release_lease(self, owner: str) -> None:
        self.client.delete(keys.lease(owner))

    def load(self, ids: Sequence[str]) -> list[Stored | Damaged | None]:
        """Read claimed messages back: None when the data is gone, Damaged when a stored
        field cannot be read (wrong key type, bad number, bad JSON, bytes that are not text)."""
        pipe = self.client.pipeline(transaction=False)
        self.load_on(pipe, ids)
        return self.loaded(ids, pipe.execute(raise_on_error=False))

    def load_on(self, pipe: redis.client.Pipeline, ids: Sequence[str]) -> None:
        """Put load's reads on a pipeline (sent with other reads: drain.worker.preamble)."""
        # HGETALL, not HMGET of the claimed fields: one pass over a small hash (kept as a
        # listpack, where each field asked for is a scan of its own), the same bytes back.
        for msg_id in ids:
            pipe.hgetall(keys.message(msg_id))

    def loaded(self, ids: Sequence[str], found_all: Sequence[Any]) -> list[Stored | Damaged | None]:
        """load's result from the replies to load_on's reads (errors among them)."""
        names = [n.encode() for n in record.CLAIMED]
        if len(self.figures) > journal.FIGURES_KEPT:
            self.figures.clear()  # (entries of mail that was not delivered: read again if need be)
        for msg_id, found in zip(ids, found_all, strict=True):
            if isinstance(found, dict):
                self.figures[msg_id] = tuple(found.get(n) for n in journal.FIGURES)
        return [claimed(record.decode(msg_id, record.CLAIMED, found if isinstance(found, Exception)
                                      else [found.get(n) for n in names]))
                for msg_id, found in zip(ids, found_all, strict=True)]

    def settle(self, owner: str, outcomes: Sequence[Outcome]) -> tuple[int, int]:
        """Record outcomes atomically; returns (settled, skipped because no longer held)."""
        if not outcomes:
            return (0, 0)
        if all(o.kind == "delivered" and o.event for o in outcomes):
            return self._deliver(owner, outcomes)
        entries, elements = self._unsettled(owner)
        known = journal.known_args(entries, self.settings.trace, elements)
        now = time.time()
        args: list[str | float | bytes | int] = [owner, f"{now:.3f}", BOUNCES_KEPT, self.settings.poison_strikes,
                                                 *events.tracer_args(self.settings),
                                                 events.oldest_kept(self.settings, now), *known]
        for o in outcomes:
            args += [o.id, o.kind, o.score, o.info, o.envelope, o.event]
        reply = self.scripts.settle(
            keys=[
                keys.INFLIGHT,
                keys.BOOKS,
                keys.READY_COUNT,
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
                keys.PARKED_FRESH_LAST,
                keys.EVENTS,
                *(k for o in outcomes for k in (keys.message(o.id),
                                                  keys.parked(o.info) if o.kind == "parked" else keys.message(o.id))),
                keys.journal(owner),
                *map(keys.message, journal.known_ids(known)),
            ],
            args=args,
        )
        eventlog.write_span(self.client, self.settings, reply[2:])
        return int(reply[0]), int(reply[1])

    def journal(self, owner: str, outcomes: Sequence[Outcome], first: bool) -> None:
        """Journal deliveries whose event data the worker made (drain/store/journal.py): one
        HSET; the owner's next settle (or the reaper) settles them. `first`: the first write
        since the owner's last settle."""
        self._wrote({keys.journal(owner): journal.write(self.client, owner, outcomes, self.settings.trace, first,
                                                        [self.figures.pop(o.id, None) for o in outcomes])})

    def journal_many(self, journals: Sequence[tuple[str, Sequence[Outcome], bool]]) -> None:
        """Journal the deliveries of several owners ((owner, outcomes, first) each) in one
        round trip (drain/worker/journalpool.py)."""
        self._wrote(journal.write_many(self.client, [(owner, outcomes, first,
                                                      [self.figures.pop(o.id, None) for o in outcomes])
                                                     for owner, outcomes, first in journals], self.settings.trace))

    def _wrote(self, entries: dict[str, list[Written]]) -> None:
        with self.written_lock:
            for key, found in entries.items():
                if found:  # (one list element per write: journal.bundle)
                    self.written.setdefault(key, []).extend(found)
                    self.elements[key] = self.elements.get(key, 0) + 1

    def _unsettled(self, owner: str) -> tuple[list[Written], int]:
        """The entries this process wrote to owner's journal since its last settle, and the list
        elements they fill (taken: the settle about to run settles them, or else the journal
        is read entry by entry)."""
        with self.written_lock:
            return self.written.pop(keys.journal(owner), []), self.elements.pop(keys.journal(owner), 0)

    def commit(self, owner: str) -> tuple[int, int]:
        """Settle the owner's journal (deliver.lua with no delivery of its own)."""
        return self._deliver(owner, [])

    def _deliver(self, owner: str, outcomes: Sequence[Outcome]) -> tuple[int, int]:
        """Settle deliveries whose event data the worker made (deliver.lua: settle.lua's usual
        call, with fewer keys and arguments), and the owner's journal."""
        trace = self.settings.trace
        entries, elements = self._unsettled(owner)
        # The deliveries themselves, grouped by their figures as the journal's are, when the
        # worker knows them all (journal.known_args): no per-message reads in the script.
        direct = [journal.written(o, trace, self.figures.get(o.id)) for o in outcomes]
        known = journal.known_args(entries, trace, elements, direct)
        if known[0]:
            reply = self._deliver_call(owner, [], known)
            if int(reply[0]) >= 0:
                for o in outcomes:
                    self.figures.pop(o.id, None)
                return int(reply[0]), int(reply[1])
            known = list(journal.NOTHING_KNOWN)  # not as the worker thought: everything read again
        elif entries:
            known = journal.known_args(entries, trace, elements)
        reply = self._deliver_call(owner, outcomes, known)
        return int(reply[0]), int(reply[1])

    def _deliver_call(self, owner: str, outcomes: Sequence[Outcome], known: list[bytes | str | int]) -> list[Any]:
        now = time.time()
        trace = self.settings.trace
        args: list[str | float | bytes | int] = [owner, f"{now:.3f}", BOUNCES_KEPT, *events.tracer_args(self.settings),
                                                 events.oldest_kept(self.settings, now), *known]
        for o in outcomes:  # with its id's index record: the script need not hash the id
            args += [o.id, o.info, o.event, events.delivered_record(o.id) if trace else ""]
        reply: list[Any] = self.scripts.deliver(
            keys=[keys.INFLIGHT, keys.BOOKS, keys.SHAPE, keys.LATENCY, keys.BOUNCES, keys.EVENTS, keys.journal(owner),
                  *(keys.message(o.id) for o in outcomes), *map(keys.message, journal.known_ids(known))],
            args=args,
        )
        eventlog.write_span(self.client, self.settings, reply[2:])
        return reply

    def narrow(self, owner: str, msg_id: str, rest: Envelope, partly: bool, accepted: str = "",
               refused: str = "") -> bool:
        """Keep only the recipients still to do of a message this owner holds, its domain (and
        backlog shape) following their first one, and record the groups done (accepted: the
        relays' replies; refused: JSON of recipients refused for good) as events (narrow.lua);
        False when no longer held."""
        reply = self.scripts.narrow(
            keys=[keys.INFLIGHT, keys.SHAPE, keys.message(msg_id), keys.EVENTS],
            args=[msg_id, owner, rest.to_json(), rest.domain, "1" if partly else "0", accepted, refused,
                  *events.tracer_args(self.settings)],
        )
        eventlog.write_span(self.client, self.settings, reply[1:])
        return bool(int(reply[0]))

    # -- housekeeping ------------------------------------------------------------------

    def held(self) -> dict[str, list[str]]:
        """In-flight ids by owner."""
        owners: dict[str, list[str]] = {}
        for msg_id, owner in self.client.hgetall(keys.INFLIGHT).items():
            owners.setdefault(books.text(owner), []).append(books.text(msg_id))
        return owners

    def reap_dead(self) -> tuple[int, int]:
        """Give back the messages of every owner whose lease lapsed: (to suspects, to quarantine).
        The deliveries in an owner's journal are settled as delivered first, not given back."""
        back = poisoned = 0
        why = json.dumps([{"code": "poison.crash", "detail": "a worker died or hung while holding it"}])
        for owner, ids in self.held().items():
            if self.client.exists(keys.lease(owner)):
                continue
            reply = self.scripts.reap(
                keys=[keys.INFLIGHT, keys.SUSPECT, keys.lease(owner), keys.QUARANTINE, keys.SHAPE, keys.FINDINGS,
                      keys.EVENTS, keys.journal(owner), keys.BOOKS, keys.LATENCY, keys.BOUNCES,
                      keys.lane_journal(owner), *map(keys.message, ids)],
                args=[owner, self.settings.poison_strikes, f"{time.time():.3f}", why,
                      *events.tracer_args(self.settings), BOUNCES_KEPT, *ids],
            )
            eventlog.write_span(self.client, self.settings, reply[2:])
            back += int(reply[0])
            poisoned += int(reply[1])
        return back, poisoned

    def promote_due(self, now: float | None = None, limit: int = 1000) -> int:
        """Move deferred messages that are due back to the ready list."""
        now = time.time() if now is None else now
        # Usually nothing is due: one plain read then, not a script call (several times the work).
        due = self.next_due()
        if due is None or due > now:
            return 0
        total = 0
        while True:
            moved = int(self.scripts.promote(keys=[keys.DEFERRED, keys.READY_COUNT, keys.HELD_RATE, keys.HELD_BREAKER],
                                             args=[f"{now:.3f}", limit]))
            total += moved
            if moved < limit:
                return total

    def sweep(self, ids: Sequence[str], findings: str) -> int:
        """Quarantine messages an operator rule matched, if they are still waiting (sweep.lua)."""
        reply = self.scripts.sweep(
            keys=[keys.DEFERRED, keys.QUARANTINE, keys.SWEPT, keys.INFLIGHT, keys.SHAPE, keys.FINDINGS, keys.EVENTS,
                  *map(keys.message, ids)],
            args=[f"{time.time():.3f}", findings, *events.tracer_args(self.settings), *ids],
        )
        eventlog.write_span(self.client, self.settings, reply[1:])
        return int(reply[0])

    def release(self, action: Literal["release", "delete"], ids: Sequence[str], actor: str, force: bool = False,
                note: str = "") -> int:
        """Move quarantined messages back to the backlog lane, or delete them, each action
        audited (release.lua); returns how many moved."""
        reply = self.scripts.release(
            keys=[keys.QUARANTINE, keys.READY_COUNT, keys.BOOKS, keys.AUDIT, keys.SHAPE, keys.EVENTS,
                  keys.SWEPT, keys.SWEPT_LANE, *map(keys.message, ids)],
            args=[action, actor, f"{time.time():.3f}", "1" if force else "0", note, AUDIT_KEPT,
                  *events.tracer_args(self.settings), *ids],
        )
        eventlog.write_span(self.client, self.settings, reply[1:])
        return int(reply[0])

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
            moved = int(self.scripts.age(keys=[keys.ring("fresh"), keys.READY_COUNT],
                                         args=[books.text(found[0]), 10000]))
            total += moved
            if moved < 10000:
                return total


    def adopt_legacy(self) -> int:
        """Move ready mail left on the ready lists of a drain from before tenants to the
        tenants' lists (adopt.lua); returns how many moved."""
        total = 0
        while self.client.exists(*keys.LEGACY_READY):
            moved = int(self.scripts.adopt(keys=list(keys.LEGACY_READY), args=[10000]))
            total += moved
            if not moved:
                break
        return total

    # -- the books -------------------------------------------------------------------

    def books(self) -> Books:
        """One consistent snapshot (MULTI/EXEC) of every state's count."""
        return books.read(self.client)

    def sample_pace(self, counted: Books | None = None) -> None:
        books.sample_pace(self.client, counted or self.books())

    def pace(self, window_s: float = 30.0) -> float:
        """Delivered messages per second over about the last window_s seconds."""
        return books.pace(self.client, window_s)

    def oldest_age_s(self, now: float | None = None) -> float:
        """Age of the oldest message still to be worked (ready head, or earliest deferred)."""
        return books.oldest_age_s(self.client, now)
