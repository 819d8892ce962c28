"""`drain serve`: a read-only status page, its JSON, Prometheus metrics and a health check.

Nothing here waits on Redis while answering a request. A refresher thread reads Redis every
couple of seconds with short socket timeouts and keeps the last good snapshot; requests are
answered from it. When Redis is slow or down the page still answers at once, says so, and
shows the last figures it had. There are no admin actions over HTTP: GET and HEAD only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from drain import backlog, keys, metrics
from drain.connection import redacted
from drain.message import Envelope
from drain.metrics import Figures, Reading
from drain.quarantine import Quarantine
from drain.settings import Settings
from drain.store import Store

log = logging.getLogger(__name__)

REFRESH_S = 2.0
# Socket timeouts of the refresher's Redis client: a slow Redis costs a refresh, not a request.
REDIS_TIMEOUT_S = 1.0
HISTORY_S = 6 * 3600.0
RECENT = 10
# Headers are read from quarantined messages up to this size; bigger ones show no subject.
HEAD_READ_MAX = 1024 * 1024
# Holdings by reason come from reading every quarantine record: every refresh while the
# quarantine is small, at most every SCAN_EVERY_S when large, never above SCAN_MAX.
SCAN_SMALL = 2000
SCAN_EVERY_S = 30.0
SCAN_MAX = 50_000

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


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
        figures = metrics.read(self.store)
        return Snapshot(figures, backlog.history(self.store, self.history_s), self._quarantine())

    def _quarantine(self) -> QuarantineView:
        client = self.store.client
        newest = cast(list[tuple[bytes, float]], client.zrevrange(keys.QUARANTINE, 0, RECENT - 1, withscores=True))
        held = int(client.zcard(keys.QUARANTINE))
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
        pipe = self.store.client.pipeline(transaction=False)
        for msg_id in ids:
            pipe.hmget(keys.message(msg_id), ["env", "why"])
            pipe.hstrlen(keys.message(msg_id), "raw")
        replies = pipe.execute()
        sizes = {msg_id: int(replies[2 * n + 1]) for n, msg_id in enumerate(ids)}
        missing = [i for i in ids if i not in self._subjects and 0 < sizes[i] <= HEAD_READ_MAX]
        if missing:
            pipe = self.store.client.pipeline(transaction=False)
            for msg_id in missing:
                pipe.hget(keys.message(msg_id), "raw")
            for msg_id, raw in zip(missing, pipe.execute(), strict=True):
                self._subjects[msg_id] = subject_of(raw or b"")
        self._subjects = {i: s for i, s in self._subjects.items() if i in sizes}
        out: list[Recent] = []
        for n, (msg_id, score) in enumerate((i.decode(), s) for i, s in newest):
            env_json, why = replies[2 * n]
            if env_json is None:
                continue  # released or deleted meanwhile
            envelope = Envelope.from_json(env_json)
            try:
                found = json.loads(why or b"[]")
                reasons = list(dict.fromkeys(str(f.get("code", "")) for f in found if isinstance(f, dict)))
            except ValueError:
                reasons = ["?"]
            subject = self._subjects.get(msg_id, "")
            if sizes[msg_id] > HEAD_READ_MAX:
                subject = f"(not read: {sizes[msg_id]:,}-byte message)"
            out.append(Recent(msg_id, score, clean(envelope.sender), [clean(r) for r in envelope.recipients],
                              subject, reasons, sizes[msg_id]))
        return out


def _kind(exc: BaseException) -> str:
    """What went wrong, for a public page: no host names, addresses or credentials (the full
    error goes to the log)."""
    if isinstance(exc, redis.TimeoutError | TimeoutError):
        return "Redis did not answer in time"
    if isinstance(exc, redis.AuthenticationError):
        return "Redis refused the credentials"
    if isinstance(exc, redis.ConnectionError | ConnectionError):
        return "cannot connect to Redis"
    return f"Redis error ({type(exc).__name__})"


@dataclass
class Snapshots:
    """The refresher: a thread that keeps the last good Snapshot and Redis's state."""

    read: Callable[[], Snapshot]
    refresh_s: float = REFRESH_S
    show_messages: bool = True
    snapshot: Snapshot | None = None
    last_error: str | None = None
    down_since: float | None = None
    started_at: float = field(default_factory=time.time)
    stopping: threading.Event = field(default_factory=threading.Event)
    refreshed: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Read once; True if Redis answered."""
        try:
            snap = self.read()
        except (redis.RedisError, OSError) as exc:
            with self._lock:
                if self.down_since is None:
                    self.down_since = time.time()
                    log.warning("Redis unreachable, serving figures from before: %s", exc)
                self.last_error = _kind(exc)
            return False
        except Exception:  # a bug must not stop the page from answering with what it has
            log.exception("reading the status snapshot failed")
            with self._lock:
                self.last_error = "internal error reading figures (see the server log)"
                if self.down_since is None:
                    self.down_since = time.time()
            return False
        with self._lock:
            if self.down_since is not None:
                log.warning("Redis answers again")
            self.snapshot, self.last_error, self.down_since = snap, None, None
        return True

    def _run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            self.refresh()
            self.refreshed.set()
            # A read that takes long (a huge backlog shape) spaces the next one out: at most
            # about a quarter of the time is spent reading.
            self.stopping.wait(max(self.refresh_s, 3 * (time.monotonic() - started)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="drain-serve-refresher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def view(self) -> View:
        with self._lock:
            return View(self.snapshot, self.down_since is None and self.snapshot is not None,
                        self.down_since, self.last_error, self.started_at, time.time(), self.refresh_s,
                        self.show_messages)

    def reading(self) -> Reading:
        view = self.view()
        return Reading(view.snapshot.figures if view.snapshot else None, view.up)


def status_document(view: View) -> dict[str, Any]:
    """The /status.json document."""
    snap = view.snapshot
    doc: dict[str, Any] = {
        "generated_at": round(view.now, 3),
        "redis": {"up": view.up, "figures_at": round(snap.figures.read_at, 3) if snap else None,
                  "down_since": view.down_since, "error": view.error},
    }
    if snap is None:
        return {**doc, "status": None, "backlog": None, "limits": None, "waits": None, "latency": None,
                "quarantine": None, "history": []}
    f = snap.figures
    buckets, total, count = metrics.latency_buckets(f.latency)
    q = snap.quarantine
    codes = sorted(set(f.findings) | set(q.held_by_reason or {}))
    return {
        **doc,
        "status": {**f.status.as_dict(), "balanced": f.status.books.balanced, "intake_paused": f.intake_paused},
        "backlog": f.shape.as_dict(),
        "limits": f.limits,
        "waits": {"held": f.counters.get("held_total", 0), "parked": f.counters.get("parked_total", 0),
                  "parked_now": f.counters.get("parked", 0)},
        "latency": {"buckets": [[le, n] for le, n in buckets], "sum": round(total, 3), "count": count},
        "quarantine": {
            "held": q.held,
            "by_reason": [{"reason": code, "held": None if q.held_by_reason is None else q.held_by_reason.get(code, 0),
                           "found": f.findings.get(code, 0)} for code in codes],
            "recent": [r.as_dict() for r in q.recent] if view.show_messages else None,
        },
        "history": snap.history,
    }


class _Handler(BaseHTTPRequestHandler):
    server: StatusHTTPServer
    def version_string(self) -> str:
        return "drain-serve"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _refuse(self) -> None:
        self._send(405, "text/plain; charset=utf-8", b"read-only: GET and HEAD only\n", True, {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _answer(self, body: bool) -> None:
        from drain import statuspage

        path = urlsplit(self.path).path
        view = self.server.snapshots.view()
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", statuspage.render(view).encode(), body)
        elif path == "/status.json":
            data = json.dumps(status_document(view), separators=(",", ":")).encode()
            self._send(200, "application/json", data, body)
        elif path == "/metrics":
            self._send(200, metrics.CONTENT_TYPE, metrics.exposition(self.server.registry), body)
        elif path == "/healthz":
            text = f"ok: serving; redis {'up' if view.up else 'unreachable'}\n"
            self._send(200, "text/plain; charset=utf-8", text.encode(), body)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /, /status.json, /metrics, /healthz\n", body)

    def _send(self, code: int, ctype: str, data: bytes, body: bool, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class StatusHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], snapshots: Snapshots) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.snapshots = snapshots
        self.registry = metrics.registry(snapshots.reading)
        super().__init__(address, _Handler)


def redis_client(url: str) -> redis.Redis:
    """A client that gives up quickly: one try, short timeouts."""
    return redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
                                retry=Retry(NoBackoff(), 0))


class StatusServer:
    """The refresher and the HTTP server together. `start()` runs both in threads (tests);
    `serve_forever()` runs the HTTP server in the calling thread."""

    def __init__(self, url: str, settings: Settings, host: str = "127.0.0.1", port: int = 8025,
                 refresh_s: float = REFRESH_S, show_messages: bool = True) -> None:
        self.redis_url = url
        self.client = redis_client(url)
        reader = Reader(Store(self.client, settings), show_messages)
        self.snapshots = Snapshots(reader.read, refresh_s, show_messages)
        self.http = StatusHTTPServer((host, port), self.snapshots)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.http.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def describe(self) -> str:
        return f"{self.url} (Redis: {redacted(self.redis_url)})"

    def start(self) -> None:
        self.snapshots.start()
        self._thread = threading.Thread(target=self.http.serve_forever, name="drain-serve-http", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """Until SIGINT or SIGTERM."""
        self.snapshots.start()

        def stop(_signum: int, _frame: object) -> None:
            threading.Thread(target=self.http.shutdown, daemon=True).start()

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                self.http.serve_forever()
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.close()

    def close(self) -> None:
        self.snapshots.stop()
        self.http.server_close()
        self.client.close()

    def stop(self) -> None:
        self.http.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.close()
