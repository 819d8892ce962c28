"""`drain serve`: a read-only status page, its JSON, Prometheus metrics and a health check.

Nothing here waits on Redis while answering a request. A refresher thread reads Redis every
couple of seconds with short socket timeouts and keeps the last good snapshot; requests are
answered from it. When Redis is slow or down the page still answers at once, says so, and
shows the last figures it had. There are no admin actions over HTTP: GET and HEAD only.
"""

from __future__ import annotations

import asyncio
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
from typing import Any, cast

import redis
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.web_protocol import RequestHandler
from redis.backoff import NoBackoff
from redis.retry import Retry

from drain.flow import ratelimit
from drain.observe import backlog, metrics
from drain.observe.metrics import Figures, Reading
from drain.ops.quarantine import Quarantine
from drain.settings import Settings
from drain.store import keys
from drain.store.connection import redacted
from drain.store.record import ENVELOPE, FINDINGS, RAW, fetch
from drain.store.store import Store

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

# The HTTP server: a long listen queue, and idle or slow connections closed after this long.
BACKLOG = 1024
IDLE_TIMEOUT_S = 15.0

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
    # Called in the refresher thread after each read (the HTTP side renders its bodies there).
    after_refresh: Callable[[], None] | None = None
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
            if self.after_refresh is not None:
                try:
                    self.after_refresh()
                except Exception:
                    log.exception("rendering the status page failed")
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
        "waits": waiting(f),
        "latency": {"buckets": [[le, n] for le, n in buckets], "sum": round(total, 3), "count": count},
        "quarantine": {
            "held": q.held,
            "by_reason": [{"reason": code, "held": None if q.held_by_reason is None else q.held_by_reason.get(code, 0),
                           "found": f.findings.get(code, 0)} for code in codes],
            "recent": [r.as_dict() for r in q.recent] if view.show_messages else None,
        },
        "history": snap.history,
    }


_HTML = "text/html; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


class StatusApp:
    """Answers requests from the snapshot, on an asyncio loop: no thread per connection.

    Bodies are rendered once per snapshot, by the refresher thread, so a crowd of readers costs
    no rendering at all."""

    def __init__(self, snapshots: Snapshots) -> None:
        self.snapshots = snapshots
        self.registry = metrics.registry(snapshots.reading)
        self._cache: dict[str, tuple[tuple[Any, ...], int, str, bytes]] = {}

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return self._response(405, _TEXT, b"read-only: GET and HEAD only\n", {"Allow": "GET, HEAD"})
        try:
            code, ctype, data = self._answer(request.path)
        except Exception:  # a bug must not take the page down, nor answer without the headers
            log.exception("answering %s failed", clean(request.path, 100))
            code, ctype, data = 500, _TEXT, b"internal error (see the server log)\n"
        return self._response(code, ctype, data)

    def _answer(self, path: str) -> tuple[int, str, bytes]:
        view = self.snapshots.view()
        if path in ("/", "/index.html"):
            return self._cached("page", view)
        if path == "/status.json":
            return self._cached("json", view)
        if path == "/metrics":
            return self._cached("metrics", view)
        if path == "/healthz":
            return 200, _TEXT, f"ok: serving; redis {'up' if view.up else 'unreachable'}\n".encode()
        return 404, _TEXT, b"not found: try /, /status.json, /metrics, /healthz\n"

    def prerender(self) -> None:
        """Render every body for the current view (the refresher calls this after each read, so
        requests find them ready and the event loop does not render)."""
        view = self.snapshots.view()
        for name in self._makers:
            self._cached(name, view)

    @property
    def _makers(self) -> dict[str, Callable[[View], tuple[str, bytes]]]:
        return {
            "page": lambda view: (_HTML, _render(view)),
            "json": lambda view: (_JSON, json.dumps(status_document(view), separators=(",", ":")).encode()),
            "metrics": lambda view: (metrics.CONTENT_TYPE, metrics.exposition(self.registry)),
        }

    def _cached(self, name: str, view: View) -> tuple[int, str, bytes]:
        # What a body depends on, besides the clock (the page's own time stamps may lag by a refresh).
        marker = (id(view.snapshot), view.up, view.down_since, view.error, view.stale)
        hit = self._cache.get(name)
        if hit is not None and hit[0] == marker:
            return hit[1], hit[2], hit[3]
        ctype, data = self._makers[name](view)
        self._cache[name] = (marker, 200, ctype, data)
        return 200, ctype, data

    @staticmethod
    def _response(code: int, ctype: str, data: bytes, extra: dict[str, str] | None = None) -> web.Response:
        headers = {**SECURITY_HEADERS, "Server": "drain-serve", "Content-Type": ctype, **(extra or {})}
        return web.Response(status=code, body=data, headers=headers)


class _Connection(RequestHandler):
    """aiohttp's connection handler, whose own error answers (a request it could not parse, a
    method its parser does not know) carry the security headers too; an unknown method gets 405."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        answer = super().handle_error(request, status, exc, message)
        if isinstance(exc, BadHttpMethod):
            answer = StatusApp._response(405, _TEXT, b"read-only: GET and HEAD only\n", {"Allow": "GET, HEAD"})
        else:
            answer.headers.update({**SECURITY_HEADERS, "Server": "drain-serve"})
        answer.force_close()
        return answer

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # A malformed request is the client's problem: one debug line, not a traceback per request
        # (anyone can send them). Errors of drain's own handler are logged by StatusApp.handle.
        kw.pop("exc_info", None)
        log.debug(*args, **kw)


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)


def _render(view: View) -> bytes:
    from drain.observe import page as statuspage

    return statuspage.render(view).encode()


def redis_client(url: str) -> redis.Redis:
    """A client that gives up quickly: one try, short timeouts."""
    return redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
                                retry=Retry(NoBackoff(), 0))


class StatusServer:
    """The refresher and the HTTP server (aiohttp on its own asyncio loop). `start()` runs both
    in threads (tests); `serve_forever()` runs the loop in the calling thread until SIGTERM/SIGINT.

    Idle connections, and ones that send a request slowly, are closed after IDLE_TIMEOUT_S;
    they cost a socket each and no thread. The listening socket is bound at construction."""

    def __init__(self, url: str, settings: Settings, host: str = "127.0.0.1", port: int = 8025,
                 refresh_s: float = REFRESH_S, show_messages: bool = False) -> None:
        self.redis_url = url
        self.client = redis_client(url)
        reader = Reader(Store(self.client, settings), show_messages)
        self.snapshots = Snapshots(reader.read, refresh_s, show_messages)
        self.app = StatusApp(self.snapshots)
        self.snapshots.after_refresh = self.app.prerender
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
        except OSError:
            self.client.close()
            raise
        self.sock.setblocking(False)
        self._loop = asyncio.new_event_loop()
        self._runner: web.ServerRunner | None = None
        self._stopped: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def describe(self) -> str:
        return f"{self.url} (Redis: {redacted(self.redis_url)})"

    async def _serve(self, ready: threading.Event | None = None) -> None:
        server = _Server(self.app.handle, keepalive_timeout=IDLE_TIMEOUT_S, access_log=None,
                            max_line_size=8190, max_headers=64)
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.SockSite(self._runner, self.sock, backlog=BACKLOG).start()
        self._stopped = asyncio.Event()
        if ready is not None:
            ready.set()
        try:
            await self._stopped.wait()
        finally:
            await self._runner.cleanup()

    def start(self) -> None:
        self.snapshots.start()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(ready),),
                                        name="drain-serve-http", daemon=True)
        self._thread.start()
        ready.wait(10)

    def serve_forever(self) -> None:
        """Until SIGINT or SIGTERM."""
        self.snapshots.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._request_stop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.remove_signal_handler(sig)
            self.close()

    def _request_stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    def close(self) -> None:
        self.snapshots.stop()
        self.sock.close()
        self.client.close()
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    def stop(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._request_stop)
            self._thread.join(timeout=10)
            self._thread = None
        self.close()
