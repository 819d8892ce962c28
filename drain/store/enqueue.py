"""New mail into Redis: a chunk of messages per call of the enqueue script (lua/enqueue.lua),
which stores them, queues the ready ones on their tenants' lists, keeps the books and
records their received (and quarantined) events, all or nothing.

The producer's share of the work (the stored body form, the envelope's JSON, the events'
entries and lookup records) is done for the next chunk while Redis stores the ones before:
from the first full chunk on, chunks go through a connection of their own (enqueue_wire.Wire,
driven by a helper thread) with two in flight, so Redis finds the next chunk waiting when it
has stored one. A chunk stores only behind the one before it, so an error stops the enqueue
with exactly the chunks before it queued (a chunk that is never sent leaves a gap in the
ids, as one that fails does, and so do ids reserved ahead and not used). The bodies are
compressed by a second helper thread (body.pack_many: zstd without the GIL), 250 at a time
as the input gives them, while this thread reads the messages after them and writes the
rest of the ARGV; what is left on this thread bounds one producer's rate
(benchmarks/enqueue-s7-2026-11-30.md, enqueue-session8-2026-11-30.md).
"""

from __future__ import annotations

import itertools
import logging
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import redis
from redis.typing import EncodableT

from drain.message import Envelope
from drain.settings import Settings
from drain.store import body, events, keys, scripts, tenancy
from drain.store.enqueue_wire import Wire, answered
from drain.store.scripts import Scripts

log = logging.getLogger(__name__)

# A message to enqueue: raw bytes, envelope, and findings (JSON) if it goes straight to quarantine.
Item = tuple[bytes, Envelope, str | None]
# Messages per script call (at most 32,767: two events each are numbered in 2 bytes). A call
# costs Redis some work of its own, the lookup index's most of all (an APPEND to each of its
# up to 256 buckets, whatever the call's size): 2,000 a call cut Redis's instructions per
# message by 5 % against 1,000 (scripts/profile_enqueue_callgrind.py), for a script that
# holds Redis ~10 ms instead of ~5.
ENQUEUE_CHUNK = 2000
# ... or fewer, once the chunk holds this many bytes of mail: a chunk's bytes are in Redis's
# memory several times while its script runs, so large mail goes in smaller chunks (1,000
# messages of 100 KB were 100 MB a call; now at most this and one message).
ENQUEUE_CHUNK_BYTES = 40 * 1024 * 1024


class Enqueue:
    """Store.enqueue_many's work on one Redis client."""

    def __init__(self, client: redis.Redis, settings: Settings, scripts: Scripts,
                 clock: Callable[[], float] = time.time) -> None:
        self.client, self.settings, self.scripts = client, settings, scripts
        self.clock = clock  # the acceptance time (unix seconds)

    def many(self, items: Iterable[Item], lane: str, tenants: Iterable[str] | None, source: str | Sequence[str],
             stored: list[str], before_chunk: Callable[[], None] | None) -> list[str]:
        lane = "fresh" if lane == "fresh" else "backlog"
        pending: Future[list[str] | None] | None = None
        helper: ThreadPoolExecutor | None = None
        packer = _Packer()
        wire: Wire | None = None
        try:
            for chunk in self._chunks(items, tenants, source, packer):
                forms = packer.take()  # its bodies compressed beside the rest of its ARGV (or None)
                call = self._call(chunk, lane, forms, wire.reserved() if wire is not None else None)
                if pending is not None:  # the chunk two back is stored; the one before is on the wire
                    sent, pending = pending, None
                    stored.extend(sent.result() or ())
                if before_chunk is not None:
                    before_chunk()
                if wire is None:  # one chunk: no thread
                    if len(chunk) < ENQUEUE_CHUNK and sum(len(i[0][0]) for i in chunk) < ENQUEUE_CHUNK_BYTES:
                        stored.extend(self._send(call))
                        continue
                    helper = ThreadPoolExecutor(1, thread_name_prefix="drain-enqueue")
                    wire = Wire(self.client, self.settings, scripts.source("enqueue"), _keys, ENQUEUE_CHUNK)
                assert helper is not None
                pending = helper.submit(wire.push, call.lane, call.args, call.ids)
            if pending is not None:
                sent, pending = pending, None
                stored.extend(sent.result() or ())
            if wire is not None:  # the last chunk's reply: its error is raised
                stored.extend(wire.finish() or ())
        finally:
            if pending is not None:  # stopped by the input or the guard: what is in Redis counts
                try:
                    stored.extend(pending.result() or ())
                except Exception as exc:
                    log.warning("enqueue: a chunk sent before the error failed too: %s", exc)
            if wire is not None:
                stored.extend(wire.settle())
            if helper is not None:
                helper.shutdown()
            packer.shutdown()
        return stored

    def _chunks(self, items: Iterable[Item], tenants: Iterable[str] | None, source: str | Sequence[str],
                packer: _Packer | None = None) -> Iterator[list[tuple[Item, str, str]]]:
        """The items in chunks of ENQUEUE_CHUNK (or ENQUEUE_CHUNK_BYTES of mail), each with its
        tenant and source; each body handed to `packer` as it comes (take() then gives the
        chunk's stored forms)."""
        sources = itertools.repeat(source) if isinstance(source, str) else iter(source)
        named = iter(tenants) if tenants is not None else None
        chunk: list[tuple[Item, str, str]] = []
        add = packer.add if packer is not None else None
        most, held = ENQUEUE_CHUNK_BYTES, 0
        for item in items:
            owner = (next(named, "") if named is not None else "") or tenancy.from_sender(item[1].sender)
            chunk.append((item, owner, next(sources, "api")))
            if add is not None:
                add(item[0])
            held += len(item[0])
            if len(chunk) >= ENQUEUE_CHUNK or held >= most:
                yield chunk
                chunk, held = [], 0
        if chunk:
            yield chunk

    def _call(self, chunk: Sequence[tuple[Item, str, str]], lane: str,
              forms: list[Future[list[bytes]]] | None = None, first: int | None = None) -> _Call:
        """The chunk's messages with their new ids, as the script's ARGV (lua/enqueue.lua). The
        producer's whole share per message is here, in one pass that writes straight into the
        one ARGV list (no list or tuple per message): the stored body form, the envelope's
        JSON, the received event's data and the lookup records of its values (events.py).
        A message's other fields (its domain and tenant, as places in the chunk's lists, and
        its own size when compressed) go into the one message table, and the counters the
        script keeps are counted here per chunk: an ARGV costs Redis far more than its bytes.
        `forms`, when given, brings the stored body forms (body.pack_many, made in a helper
        thread meanwhile, in slices): they are put in their places after the pass. `first`, when given,
        is the first of the ids reserved for it (Wire.reserved); else they are reserved here."""
        if first is None:
            first = int(self.client.incrby(keys.SEQ, len(chunk))) - len(chunk) + 1
        last = first + len(chunk) - 1
        fields: list[EncodableT] = []
        # Tenants and domains by their place (from 1) in the chunk's lists; a domain's count
        # of ready messages (the backlog shape's); each message's two places, in order.
        tenants: dict[str, int] = {}
        domains: dict[str, list[int]] = {}
        places: list[tuple[int, int]] = []
        held: list[EncodableT] = []
        # The events' lookup records by bucket, as one string each: a value's 3-byte tag and
        # the 5 bytes of where the events are. Every event of a call is at one place in the
        # stream (enqueue.lua), so a value met again in the chunk (a sender, a domain) has its
        # record already, and the place is proposed here, from this clock (`placed`): Redis
        # takes the records as they are when it puts the events there (else it rewrites their
        # places). One ARGV a bucket, not two a record (redis-py packs each ARGV in Python).
        buckets: dict[bytes, bytearray] = {}
        placed = int(self.clock() * 1000)
        where = _index_place(placed)
        trace, pack = self.settings.trace, body.pack
        unique = events.index_record.__wrapped__  # an id is hashed once: no cache
        seen: set[str] = set()  # the lookup values whose records the call has already
        # The received events' stream entries, RECEIVED_PER_ENTRY to one: (id, data) for a
        # lone event, else ('', the JSON array of [id, data] pairs), as the script adds them.
        entries: list[EncodableT] = []
        group: list[str] = []
        per_entry = events.RECEIVED_PER_ENTRY
        for n, ((raw, env, why), owner, source) in enumerate(chunk, first):
            tenant = tenants.get(owner)
            if tenant is None:
                tenants[owner] = tenant = len(tenants) + 1
            domain = env.domain
            counts = domains.get(domain)
            if counts is None:
                domains[domain] = counts = [len(domains) + 1, 0]
            places.append((counts[0], tenant))
            envelope = env.to_json()
            data = quarantined = ""
            if trace:
                msg_id = format(n, "x")
                data, records = events.received_parts(raw, env.sender, env.recipients, source, owner,
                                                      "" if env.smtputf8 else envelope, env.message_id, seen)
                records.append(unique(events.BY_ID + msg_id))
                for bucket, tag in records:
                    pairs = buckets.get(bucket)
                    if pairs is None:
                        buckets[bucket] = pairs = bytearray()
                    pairs += tag
                    pairs += where
                if why:  # and its quarantined event, found by its id's record too
                    quarantined = events.quarantined_data(why)
                group.append(f'["{msg_id}",{data}]')  # ids are hex: nothing to escape
                if len(group) >= per_entry:
                    entries += ("", f"[{','.join(group)}]")
                    group = []
            if why:
                held += (n - first + 1, why, quarantined)
            else:
                counts[1] += 1
            fields += (pack(raw) if forms is None else b"", envelope)
        if len(group) == 1:  # a lone event keeps the usual form
            entries += (format(last, "x"), data)
        elif group:
            entries += ("", f"[{','.join(group)}]")
        if forms is not None:  # each message's 2 fields: its body's form first
            fields[::2] = [form for part in forms for form in part.result()]
        table = _table(chunk, places, fields)
        args: list[EncodableT] = [f"{self.clock():.3f}", lane, keys.message(""), keys.lane(lane, ""),
                                  *events.tracer_args(self.settings), len(chunk), first, len(tenants), *tenants,
                                  len(domains)]
        for domain, (_place, ready) in domains.items():
            args += (domain, ready)
        args += (table, *fields, len(held) // 3, *held, len(entries) // 2, *entries, placed, len(buckets))
        for bucket, pairs in buckets.items():
            args += (bucket, bytes(pairs))
        return _Call(lane, args, [format(n, "x") for n in range(first, last + 1)])

    def _send(self, call: _Call) -> list[str]:
        """Store a chunk (one script call); its ids. A write that only feeds figures may fail
        alone: logged, the mail is stored."""
        answered(self.client, self.settings, self.scripts.enqueue(keys=_keys(call.lane), args=call.args))
        return call.ids


# Bodies per slice compressed by the packer's thread: handed over as the input gives them,
# so that most of a chunk's are compressed by the time its ARGV is written.
PACK_SLICE = 250


class _Packer:
    """The stored forms of a chunk's bodies (body.pack_many: zstd, which holds no GIL) made
    by a helper thread while this one reads the messages after them, a slice at a time.
    An input that never fills a slice starts no thread: its chunk packs its bodies itself."""

    def __init__(self) -> None:
        self.pool: ThreadPoolExecutor | None = None
        self.slices: list[Future[list[bytes]]] = []
        self.raws: list[bytes] = []

    def add(self, raw: bytes) -> None:
        self.raws.append(raw)
        if len(self.raws) >= PACK_SLICE:
            self._submit()

    def take(self) -> list[Future[list[bytes]]] | None:
        """The forms of the bodies added since the last take, in slices (None: pack them inline)."""
        if not self.slices:
            self.raws = []
            return None
        if self.raws:
            self._submit()
        taken, self.slices = self.slices, []
        return taken

    def _submit(self) -> None:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="drain-pack")
        self.slices.append(self.pool.submit(body.pack_many, self.raws))
        self.raws = []

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


@dataclass(frozen=True)
class _Call:
    """One chunk ready for the enqueue script: its lane, ARGV and the ids it gives."""

    lane: str
    args: list[EncodableT]
    ids: list[str]


_PLACES = struct.Struct(">HHB")  # lua/enqueue.lua's message table: domain, tenant, size's length


def _table(chunk: Sequence[tuple[Item, str, str]], places: list[tuple[int, int]], fields: list[EncodableT]) -> bytes:
    """The script's message table: per message the places (from 1) of its domain and tenant,
    and its own size as text when its body is stored compressed (else no text)."""
    row, mark = _PLACES.pack, body.MARK
    out = bytearray()
    for ((raw, _env, _why), _owner, _source), (domain, tenant), stored in zip(chunk, places, fields[::2], strict=True):
        if stored[:3] == mark:  # type: ignore[index]
            size = b"%d" % len(raw)
            out += row(domain, tenant, len(size))
            out += size
        else:
            out += row(domain, tenant, 0)
    return bytes(out)


def _index_place(ms: int) -> bytes:
    """The 5 bytes of an index record that say where its event is, for the entries an enqueue
    call writes from ms-8191 on (lib.event's form: ms within its day * 8192 + 8191, "that
    sequence or more"; lookup.py reads them)."""
    return ((ms % 86_400_000) * 8192 + 8191).to_bytes(5, "big")


def _keys(lane: str) -> list[str]:
    """The enqueue script's KEYS for a lane (lua/enqueue.lua)."""
    return [keys.BOOKS, keys.READY_COUNT, keys.ring(lane) + ":join", keys.TENANTS, keys.TENANT_SHAPE,
            keys.SHAPE, keys.SEQ_TIME, keys.QUARANTINE, keys.FINDINGS, keys.EVENTS]
