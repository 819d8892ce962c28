"""The lifetime limit for mail that is not being tried: deferred, held for its rate or by a
breaker, or parked behind a paused or capped domain. A failed attempt checks the lifetime
itself (drain.worker.batch); mail that waits without attempts is found here.

Housekeeping runs `scan` every round; at most every SCAN_EVERY_S it reads a page of the
deferred set (ZSCAN, going on from where the last page ended) and a page of parked mail
(the parked lists in turn, each from where it was left), so a queue of millions costs a
bounded amount a round (SCAN_PAGE entries of each) and is covered over some rounds.
Mail older than DRAIN_MAX_LIFETIME bounces as expired (counted as bounced, a report to the
sender when DRAIN_DSN is on); with DRAIN_DELAY_WARNING set, mail older than that gets one
delay warning (a "delayed" report) per message.
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
    """The next (id, place) entries to look at: a page of the deferred set, and a page taken
    from the parked lists, domain after domain, each going on from where the last one ended."""
    client = store.client
    cursors = {books.text(k): books.text(v) for k, v in cast(dict[bytes, bytes],
                                                               client.hgetall(keys.LIFETIME_CURSOR)).items()}
    cursor, members = client.zscan(keys.DEFERRED, _int(cursors.get("deferred")), count=SCAN_PAGE)
    pairs = [(books.text(cast(bytes, m)), "d") for m, _score in members]
    domains = parked_domains(client)
    positions: dict[str, int] = {"deferred": int(cursor)}
    positions.update((f"parked:{d}", _int(cursors.get(f"parked:{d}"))) for d in domains)
    budget, turn = SCAN_PAGE, _int(cursors.get("turn"))
    for step in range(len(domains)):
        if budget <= 0:
            break
        turn = (turn + (1 if step else 0)) % len(domains)
        name = f"parked:{domains[turn]}"
        start = positions[name]
        page = cast(list[bytes], client.lrange(keys.parked(domains[turn]), start, start + budget - 1))
        pairs += [(books.text(m), "l") for m in page]
        # A full page: this list may go on, the next scan starts there; else it starts over.
        positions[name] = start + len(page) if len(page) == budget else 0
        budget -= len(page)
    positions["turn"] = turn
    pipe = client.pipeline(transaction=False)
    pipe.delete(keys.LIFETIME_CURSOR)
    pipe.hset(keys.LIFETIME_CURSOR, mapping=cast(dict[Any, Any], positions))
    pipe.execute()
    return list(dict.fromkeys(pairs))


def _int(text: str | None) -> int:
    return int(text) if text and text.isascii() and text.isdigit() else 0


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
                  dict.fromkeys(found.envelope.recipients, reply), found.tenant)
