"""The lifetime limit for mail that is not being tried: deferred, held for its rate or by a
breaker, or parked behind a paused or capped domain. A failed attempt checks the lifetime
itself (drain.worker.batch); mail that waits without attempts is found here.

Housekeeping runs `scan` every round; at most every SCAN_EVERY_S it reads a page of the
deferred set (ZSCAN, going on from where the last page ended) and a page of each parked
list, so a queue of millions costs a bounded amount a round and is covered over some
rounds. Mail older than DRAIN_MAX_LIFETIME bounces as expired (counted as bounced, a
report to the sender when DRAIN_DSN is on); with DRAIN_DELAY_WARNING set, mail older than
that gets one delay warning (a "delayed" report) per message.
Ready mail is left to the workers: it is tried soon (or delivery is paused on purpose).
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from drain.durations import human
from drain.ops.actions import Report, act, originals, send_reports
from drain.ops.select import parked_domains
from drain.store import books, keys, record
from drain.store.store import Store

log = logging.getLogger(__name__)

SCAN_EVERY_S = 5.0
# Entries read from the deferred set and from each parked list per scan.
SCAN_PAGE = 1000
WARNED = "dw"  # message hash field: when a delay warning was sent (see act.lua)


def _page(store: Store) -> list[tuple[str, str]]:
    """The next (id, place) entries to look at: a page of the deferred set and of each parked list."""
    client = store.client
    cursors = {books.text(k): books.text(v) for k, v in cast(dict[bytes, bytes],
                                                               client.hgetall(keys.LIFETIME_CURSOR)).items()}
    cursor, members = client.zscan(keys.DEFERRED, int(cursors.get("deferred", "0") or 0), count=SCAN_PAGE)
    pairs = [(books.text(cast(bytes, m)), "d") for m, _score in members]
    positions: dict[str | bytes, int | str] = {"deferred": int(cursor)}
    for domain in parked_domains(client):
        name = f"parked:{domain}"
        start = int(cursors.get(name, "0") or 0)
        page = cast(list[bytes], client.lrange(keys.parked(domain), start, start + SCAN_PAGE - 1))
        positions[name] = start + len(page) if len(page) == SCAN_PAGE else 0
        pairs += [(books.text(m), "l") for m in page]
    pipe = client.pipeline(transaction=False)
    pipe.delete(keys.LIFETIME_CURSOR)
    pipe.hset(keys.LIFETIME_CURSOR, mapping=cast(dict[Any, Any], positions))
    pipe.execute()
    return list(dict.fromkeys(pairs))


def scan(store: Store, now: float | None = None, force: bool = False) -> tuple[int, int]:
    """Expire waiting mail past its lifetime and warn senders of delayed mail; returns
    (expired, warned). Spaced SCAN_EVERY_S apart across workers unless force."""
    client, settings = store.client, store.settings
    if not force and not client.set(keys.LIFETIME_LOCK, b"1", nx=True, px=int(SCAN_EVERY_S * 1000)):
        return (0, 0)
    now = time.time() if now is None else now
    pairs = _page(store)
    if not pairs:
        return (0, 0)
    found = record.fetch(client, [i for i, _p in pairs], (record.ACCEPTED,))
    ages = {r.id: now - r.accepted_at for r in found if r is not None and r.accepted_at > 0}
    expiring = [(i, p) for i, p in pairs if ages.get(i, 0.0) >= settings.max_lifetime_s]
    expired = _expire(store, expiring, now) if expiring else 0
    warned = 0
    if settings.delay_warning_s > 0:
        late = [(i, p) for i, p in pairs if settings.delay_warning_s <= ages.get(i, 0.0) < settings.max_lifetime_s]
        warned = _warn(store, late, now) if late else 0
    return expired, warned


def _expire(store: Store, pairs: list[tuple[str, str]], now: float) -> int:
    settings = store.settings
    lifetime = human(settings.max_lifetime_s)
    reply = f"554 5.4.7 delivery time expired: queued longer than {lifetime}"
    kept = originals(store, [i for i, _p in pairs]) if settings.dsn else {}
    moved = act(store, "expire", pairs, "lifetime", reply, cutoff=now - settings.max_lifetime_s, audit=False)
    if moved:
        log.warning("%d waiting messages expired (queued longer than %s); counted as bounced", len(moved), lifetime)
        send_reports(store, [_report(kept[i], reply) for i in moved if i in kept])
    return len(moved)


def _warn(store: Store, pairs: list[tuple[str, str]], now: float) -> int:
    settings = store.settings
    pipe = store.client.pipeline(transaction=False)
    for msg_id, _place in pairs:
        pipe.hexists(keys.message(msg_id), WARNED)
    pairs = [pair for pair, warned in zip(pairs, pipe.execute(), strict=True) if not warned]
    kept = originals(store, [i for i, _p in pairs])
    pairs = [pair for pair in pairs if pair[0] in kept]  # null sender: nobody to warn
    if not pairs:
        return 0
    moved = act(store, "warn", pairs, "lifetime", "delay warning", cutoff=now - settings.delay_warning_s,
                audit=False)
    reply = (f"450 4.4.7 not delivered yet after {human(settings.delay_warning_s)}; still trying, for up to "
             f"{human(settings.max_lifetime_s)} from when it was accepted")
    return send_reports(store, [_report(kept[i], reply) for i in moved], kind="delayed")


def _report(found: record.Record, reply: str) -> Report:
    return Report(found.id, found.raw or b"", found.envelope, found.accepted_at,
                  dict.fromkeys(found.envelope.recipients, reply))
