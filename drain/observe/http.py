"""`drain serve`: a read-only status page, its JSON, Prometheus metrics and a health check.

Nothing here waits on Redis while answering a request. A refresher thread (drain.observe.snapshot)
reads Redis every couple of seconds with short socket timeouts and keeps the last good snapshot;
requests are answered from it. When Redis is slow or down the page still answers at once, says so,
and shows the last figures it had. There are no admin actions over HTTP: GET and HEAD only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

import redis
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.web_protocol import RequestHandler

from drain.observe import metrics, page
from drain.observe.cellsread import CellsReader
from drain.observe.document import status_document
from drain.observe.model import Reader, View, clean
from drain.observe.snapshot import REFRESH_S, Snapshots
from drain.settings import Settings
from drain.store.cells import cells_of, split_urls
from drain.store.connection import client_for, redacted
from drain.store.store import Store

log = logging.getLogger(__name__)

# Socket timeouts of the refresher's Redis client: a slow Redis costs a refresh, not a request.
REDIS_TIMEOUT_S = 1.0
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
            "page": lambda view: (_HTML, page.render(view).encode()),
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


def redis_client(url: str) -> redis.Redis:
    """A client that gives up quickly: one try, short timeouts (any URL drain takes, sentinel too)."""
    return client_for(url, timeout_s=REDIS_TIMEOUT_S)


class StatusServer:
    """The refresher and the HTTP server (aiohttp on its own asyncio loop). `start()` runs both
    in threads (tests); `serve_forever()` runs the loop in the calling thread until SIGTERM/SIGINT.

    Idle connections, and ones that send a request slowly, are closed after IDLE_TIMEOUT_S;
    they cost a socket each and no thread. The listening socket is bound at construction."""

    def __init__(self, url: str, settings: Settings, host: str = "127.0.0.1", port: int = 8025,
                 refresh_s: float = REFRESH_S, show_messages: bool = False) -> None:
        self.redis_url = url
        if len(split_urls(url)) > 1:  # several cells: added up, a row per cell
            cells = CellsReader(cells_of(settings.with_(redis_url=url)), settings, show_messages, REDIS_TIMEOUT_S)
            self._clients = cells.clients
            read = cells.read
        else:
            self._clients = [redis_client(url)]
            read = Reader(Store(self._clients[0], settings), show_messages).read
        self.client = self._clients[0]
        self.snapshots = Snapshots(read, refresh_s, show_messages)
        self.app = StatusApp(self.snapshots)
        self.snapshots.after_refresh = self.app.prerender
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
        except OSError:
            for client in self._clients:
                client.close()
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
        for client in self._clients:
            client.close()
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    def stop(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._request_stop)
            self._thread.join(timeout=10)
            self._thread = None
        self.close()
