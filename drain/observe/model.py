"""The read model: every figure the status page, /status.json and /metrics show, read from Redis.

`read` takes the figures (the books, backlog shape, status, findings, latency, limits); a
`Reader` adds the quarantine view and the history into a `Snapshot`; a `View` is a snapshot
as a request sees it (with how Redis is doing). The renderers (page, document, metrics) read
these and nothing else.
"""

from __future__ import annotations

import logging
import math
import time
import unicodedata
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any, cast

import redis

from drain.flow import ratelimit
from drain.intake import door as intake
from drain.observe import backlog, status
from drain.observe.backlog import Shape
from drain.observe.status import Status
from drain.ops.quarantine import Quarantine
from drain.store import keys
from drain.store.record import ENVELOPE, FINDINGS, RAW, fetch
from drain.store.store import Store

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the delivery latency buckets, as settle.lua writes them; its
# counts are per bucket (not cumulative), with "inf" above the last bound and "sum" beside.
LATENCY_BOUNDS = ("1", "5", "15", "60", "300", "900", "3600", "14400", "86400")
# How far back the backlog history goes, and how many recently quarantined messages are listed.
HISTORY_S = 6 * 3600.0
RECENT = 10
# Headers are read from quarantined messages up to this size; bigger ones show no subject.
HEAD_READ_MAX = 1024 * 1024
# Holdings by reason come from reading every quarantine record: every refresh while the
# quarantine is small, at most every SCAN_EVERY_S when large, never above SCAN_MAX.
SCAN_SMALL = 2000
SCAN_EVERY_S = 30.0
SCAN_MAX = 50_000


@dataclass(frozen=True)
class Figures:
    """Everything the metrics (and the status page) show, read from Redis at read_at."""

    read_at: float
    status: Status
    # The books hash: accepted, delivered, bounced, deleted, held_total, parked_total, parked.
    counters: dict[str, int]
    # Quarantine findings by reason code, since the start (a message counts once per code).
    findings: dict[str, int]
    # Delivery latency: bound -> count (per bucket), and "sum".
    latency: dict[str, float]
    shape: Shape
    # ratelimit.show(): global rate, burst, pause, per-domain caps.
    limits: dict[str, Any]
    intake_paused: bool
    # With several cells: a row per cell {"cell", "up", "error"?, books, "rate_per_s"}.
    cells: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Reading:
    """What a scrape gets: the last figures known (None if none yet) and whether the read
    that should have refreshed them succeeded."""

    figures: Figures | None
    up: bool


def _numbers(raw: dict[bytes, bytes]) -> dict[str, float]:
    """A hash of counters, each field that is not a finite number left out (damaged or planted)."""
    out: dict[str, float] = {}
    for k, v in raw.items():
        try:
            number = float(v)
        except ValueError:
            continue
        if math.isfinite(number):
            out[k.decode("utf-8", "replace")] = number
    return out


def _ints(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {k: int(v) for k, v in _numbers(raw).items()}


def read(store: Store) -> Figures:
    """Read every figure; raises redis.RedisError when Redis does not answer."""
    shape = backlog.shape(store)
    st = status.read(store, shape)
    pipe = store.client.pipeline(transaction=False)
    pipe.hgetall(keys.BOOKS)
    pipe.hgetall(keys.FINDINGS)
    pipe.hgetall(keys.LATENCY)
    # A key of the wrong type (damaged or planted) reads as empty, not as Redis down.
    counters, findings, latency = ({} if isinstance(r, redis.ResponseError) else r
                                   for r in pipe.execute(raise_on_error=False))
    return Figures(
        read_at=time.time(),
        status=st,
        counters=_ints(counters),
        findings=_ints(findings),
        latency=_numbers(cast(dict[bytes, bytes], latency)),
        shape=shape,
        limits=ratelimit.show(store.client),
        intake_paused=intake.is_paused(store.client),
    )


def latency_buckets(latency: dict[str, float]) -> tuple[list[tuple[str, float]], float, int]:
    """Cumulative (le, count) buckets ending with +Inf, the sum, and the count."""
    running = 0.0
    buckets: list[tuple[str, float]] = []
    for bound in LATENCY_BOUNDS:
        running += latency.get(bound, 0.0)
        buckets.append((bound, running))
    running += latency.get("inf", 0.0)
    buckets.append(("+Inf", running))
    return buckets, latency.get("sum", 0.0), int(running)


@dataclass(frozen=True)
class Recent:
    """A recently quarantined message, as shown: every text field is attacker-controlled."""

    id: str
    quarantined_at: float
    sender: str
    recipients: list[str]
    subject: str
    reasons: list[str]
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "quarantined_at": self.quarantined_at, "sender": self.sender,
                "recipients": self.recipients, "subject": self.subject, "reasons": self.reasons, "size": self.size}


@dataclass(frozen=True)
class QuarantineView:
    held: int
    # Reason code -> messages held now with it; None when the quarantine is too big to scan.
    held_by_reason: dict[str, int] | None
    scanned_at: float
    recent: list[Recent]


@dataclass(frozen=True)
class Snapshot:
    figures: Figures
    history: list[dict[str, Any]]
    quarantine: QuarantineView


@dataclass(frozen=True)
class View:
    """What a request is answered from: the last snapshot and how Redis is doing."""

    snapshot: Snapshot | None
    up: bool
    down_since: float | None
    error: str | None
    started_at: float
    now: float
    refresh_s: float
    show_messages: bool

    @property
    def stale(self) -> bool:
        """Redis answers, but the figures are older than a few refreshes (a slow Redis)."""
        if self.snapshot is None:
            return False
        return self.now - self.snapshot.figures.read_at > max(10.0, 4 * self.refresh_s)


def clean(text: str, limit: int = 200) -> str:
    """One line of at most `limit` characters, without control or format characters
    (bidi overrides and the like), for display. HTML escaping is the renderer's job."""
    kept = "".join(ch if unicodedata.category(ch) not in {"Cc", "Cf"} else " " for ch in text)
    line = " ".join(kept.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def subject_of(raw: bytes) -> str:
    """The decoded Subject header of raw message bytes; "" when absent or unreadable."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    try:
        value = BytesHeaderParser(policy=compat32).parsebytes(head).get("Subject")
        if value is None:
            return ""
        try:
            return clean(str(make_header(decode_header(str(value)))))
        except Exception:  # a broken encoded word: show it as it came
            return clean(str(value))
    except Exception:  # hostile headers must not take the page down
        return ""


class Reader:
    """Reads a Snapshot; keeps what is costly and does not change (subjects, the reason scan)."""

    def __init__(self, store: Store, show_messages: bool = True, history_s: float = HISTORY_S) -> None:
        self.store = store
        self.show_messages = show_messages
        self.history_s = history_s
        self._subjects: dict[str, str] = {}
        self._scan: tuple[tuple[int, float], dict[str, int] | None, float] = ((-1, 0.0), None, 0.0)

    def read(self) -> Snapshot:
        figures = read(self.store)
        return Snapshot(figures, backlog.history(self.store, self.history_s), self._quarantine())

    def _quarantine(self) -> QuarantineView:
        client = self.store.client
        try:
            newest = cast(list[tuple[bytes, float]], client.zrevrange(keys.QUARANTINE, 0, RECENT - 1,
                                                                      withscores=True))
            held = int(client.zcard(keys.QUARANTINE))
        except redis.ResponseError as exc:  # a key of the wrong type: the rest of the page stays
            log.error("the quarantine cannot be read: %s", exc)
            return QuarantineView(0, None, time.time(), [])
        by_reason, scanned_at = self._held_by_reason(held, newest[0][1] if newest else 0.0)
        recent = self._recent(newest) if self.show_messages else []
        return QuarantineView(held, by_reason, scanned_at, recent)

    def _held_by_reason(self, held: int, newest: float) -> tuple[dict[str, int] | None, float]:
        marker, counts, scanned_at = self._scan
        now = time.time()
        if held > SCAN_MAX:
            return None, now
        if marker == (held, newest) or (held > SCAN_SMALL and now - scanned_at < SCAN_EVERY_S):
            return counts, scanned_at
        counts = {}
        for record in Quarantine(self.store).records():
            for code in record.reasons:
                counts[code] = counts.get(code, 0) + 1
        self._scan = ((held, newest), counts, now)
        return counts, now

    def _recent(self, newest: list[tuple[bytes, float]]) -> list[Recent]:
        ids = [i.decode() for i, _score in newest]
        found = fetch(self.store.client, ids, (ENVELOPE, FINDINGS), size=True)
        sizes = {msg_id: r.size if r else 0 for msg_id, r in zip(ids, found, strict=True)}
        missing = [i for i in ids if i not in self._subjects and 0 < sizes[i] <= HEAD_READ_MAX]
        for head in fetch(self.store.client, missing, (RAW,)):
            if head is not None:
                self._subjects[head.id] = subject_of(head.raw or b"")
        self._subjects = {i: s for i, s in self._subjects.items() if i in sizes}
        out: list[Recent] = []
        for r, (_msg_id, score) in zip(found, newest, strict=True):
            if r is None:
                continue  # released or deleted meanwhile
            subject = self._subjects.get(r.id, "")
            if r.size > HEAD_READ_MAX:
                subject = f"(not read: {r.size:,}-byte message)"
            out.append(Recent(r.id, score, clean(r.envelope.sender), [clean(x) for x in r.envelope.recipients],
                              subject, r.reasons, r.size))
        return out


def waiting(figures: Figures) -> dict[str, Any]:
    """Mail waiting on a paused or capped destination, by destination (largest first): what a
    reader of the page can use. The raw wait counters are in /metrics only."""
    limits = cast(dict[str, dict[str, Any]], figures.limits.get("domains", {}))
    rows: list[dict[str, Any]] = []
    for entry in figures.shape.domains:
        limit = limits.get(entry.domain) or {}
        rate, effective = limit.get("rate"), limit.get("effective")
        if limit.get("paused"):
            why = "paused"
        elif rate is not None:
            why = "held (rate 0)" if rate <= 0 else f"capped at {ratelimit.format_rate(float(rate))}"
        elif effective is not None:
            why = f"slowed to {ratelimit.format_rate(float(effective))} (the relay pushed back)"
        else:
            continue
        rows.append({"domain": entry.domain, "queued": entry.total, "why": why})
    return {"delivery_paused": bool(figures.limits.get("paused")), "domains": rows}
