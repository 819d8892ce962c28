"""New mail into Redis: a chunk of messages per call of the enqueue script (lua/enqueue.lua),
which stores them, queues the ready ones on their tenants' lists, keeps the books and
records their received (and quarantined) events, all or nothing.

The producer's share of the work (the stored body form, the envelope's JSON, the events'
data and lookup hashes) is done for the next chunk while Redis stores the one before: each
chunk is sent by a helper thread, and the next is sent only once that one is stored, so an
error stops the enqueue with exactly the chunks before it queued.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import redis
from redis.typing import EncodableT

from drain.message import Envelope
from drain.settings import Settings
from drain.store import body, eventlog, events, keys, tenancy
from drain.store.scripts import Scripts

log = logging.getLogger(__name__)

# A message to enqueue: raw bytes, envelope, and findings (JSON) if it goes straight to quarantine.
Item = tuple[bytes, Envelope, str | None]
# Messages per script call.
ENQUEUE_CHUNK = 1000
# What a message needs besides its id: its 8 fields of the script's ARGV after the id, and
# its received event's lookup records besides the id's (bucket, tag).
Row = tuple[list[EncodableT], list[tuple[bytes, bytes]]]


class Enqueue:
    """Store.enqueue_many's work on one Redis client."""

    def __init__(self, client: redis.Redis, settings: Settings, scripts: Scripts,
                 clock: Callable[[], float] = time.time) -> None:
        self.client, self.settings, self.scripts = client, settings, scripts
        self.clock = clock  # the acceptance time (unix seconds)

    def many(self, items: Iterable[Item], lane: str, tenants: Iterable[str] | None, source: str | Sequence[str],
             stored: list[str], before_chunk: Callable[[], None] | None) -> list[str]:
        lane = "fresh" if lane == "fresh" else "backlog"
        pending: Future[list[str]] | None = None
        helper: ThreadPoolExecutor | None = None
        try:
            for chunk in self._chunks(items, tenants, source):
                rows = [self._row(*parts) for parts in chunk]
                if pending is not None:
                    sent, pending = pending, None
                    stored.extend(sent.result())
                if before_chunk is not None:
                    before_chunk()
                if helper is None:  # one chunk: no thread
                    if len(rows) < ENQUEUE_CHUNK:
                        stored.extend(self.store(rows, lane))
                        continue
                    helper = ThreadPoolExecutor(1, thread_name_prefix="drain-enqueue")
                pending = helper.submit(self.store, rows, lane)
            if pending is not None:
                sent, pending = pending, None
                stored.extend(sent.result())
        finally:
            if pending is not None:  # stopped by the input or the guard: what is in Redis counts
                try:
                    stored.extend(pending.result())
                except Exception as exc:
                    log.warning("enqueue: a chunk sent before the error failed too: %s", exc)
            if helper is not None:
                helper.shutdown()
        return stored

    def _chunks(self, items: Iterable[Item], tenants: Iterable[str] | None,
                source: str | Sequence[str]) -> Iterator[list[tuple[Item, str, str]]]:
        """The items in chunks of ENQUEUE_CHUNK, each with its tenant and source."""
        sources = itertools.repeat(source) if isinstance(source, str) else iter(source)
        named = iter(tenants) if tenants is not None else None
        chunk: list[tuple[Item, str, str]] = []
        for item in items:
            owner = (next(named, "") if named is not None else "") or tenancy.from_sender(item[1].sender)
            chunk.append((item, owner, next(sources, "api")))
            if len(chunk) >= ENQUEUE_CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _row(self, item: Item, owner: str, source: str) -> Row:
        raw, env, why = item
        stored = body.pack(raw)
        data = quarantined = ""
        records: list[tuple[bytes, bytes]] = []
        if self.settings.trace:
            data, records = events.received_parts(raw, env.sender, env.recipients, source, owner)
            quarantined = events.quarantined_data(why) if why else ""
        return [stored, len(raw) if stored.startswith(body.MARK) else "", env.to_json(), env.domain, owner,
                why or "", data, quarantined], records

    def store(self, rows: Sequence[Row], lane: str) -> list[str]:
        """Give prepared messages their ids and store them (one script call); their ids. A
        write that only feeds figures may fail alone: logged, the mail is stored."""
        last = int(self.client.incrby(keys.SEQ, len(rows)))
        ids = [format(n, "x") for n in range(last - len(rows) + 1, last + 1)]
        tenants = list(dict.fromkeys(str(fields[4]) for fields, _records in rows))
        args: list[EncodableT] = [f"{self.clock():.3f}", lane, keys.message(""), keys.lane(lane, ""),
                                  *events.tracer_args(self.settings), len(rows), len(tenants), *tenants]
        # The events' lookup records by bucket: (event number, tag) pairs, flat. Received
        # events share a stream entry RECEIVED_PER_ENTRY at a time (enqueue.lua): a value met
        # again in the same entry (a sender, a domain) has its record already.
        buckets: dict[bytes, list[EncodableT]] = {}
        numbered = received = 0
        entry: set[tuple[bytes, bytes]] = set()
        for msg_id, (fields, records) in zip(ids, rows, strict=True):
            args.append(msg_id)
            args += fields
            if fields[6]:  # its received event
                numbered += 1
                if received % events.RECEIVED_PER_ENTRY == 0:
                    entry = set()
                received += 1
                own = events.index_record(events.BY_ID + msg_id)
                for bucket, tag in (own, *records):
                    if (bucket, tag) not in entry:
                        entry.add((bucket, tag))
                        buckets.setdefault(bucket, []).extend((numbered, tag))
                if fields[7]:  # and its quarantined event, found by its id
                    numbered += 1
                    buckets.setdefault(own[0], []).extend((numbered, own[1]))
        args.append(len(buckets))
        for bucket, pairs in buckets.items():
            args += [bucket, len(pairs) // 2, *pairs]
        reply = self.scripts.enqueue(
            keys=[keys.BOOKS, keys.READY_COUNT, keys.ring(lane) + ":join", keys.TENANTS, keys.TENANT_SHAPE,
                  keys.SHAPE, keys.SEQ_TIME, keys.QUARANTINE, keys.FINDINGS, keys.EVENTS],
            args=args)
        for error in reply[2:]:
            log.error("enqueue: a write that only feeds figures failed (%s); the mail is stored",
                      _text(error))
        if reply[0]:
            eventlog.write_span(self.client, self.settings, [_text(reply[0]), _text(reply[1])])
        return ids


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
