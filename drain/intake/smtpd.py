"""SMTP ingress (`drain smtpd`): programs in any language hand mail to drain over SMTP.

Each message takes the Python API's path (`Client.prepare`, then the store), and the 250
reply to DATA is sent only once Redis holds it; when it cannot be stored the reply is 451,
so the client keeps the message and tries again. Checks at the door: client network (554),
intake pause and Redis health (421, then the session is closed), STARTTLS and AUTH
(530/538), SIZE (552), envelope addresses by the workers' own rule (553), recipients per
message (452), concurrent sessions (421). Failed AUTH is slowed, ends the session after a few
tries, and an address with many failures is refused for a while; no credential is logged.
Long lines are taken (up to the size limit) so that the workers give their verdict on them.

`drain smtpd --processes N` runs N such servers on one listening socket (drain.intake.smtpd_pool);
the session cap and the AUTH limits count across them (drain.intake.smtpd_limits). A graceful
stop stops listening, lets every transaction under way finish, then closes the sessions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from drain.errors import ConfigError, DrainError
from drain.intake.api import Client
from drain.intake.smtpd_limits import AuthGuard, SessionCount
from drain.intake.smtpd_session import _SMTP, Credentials, Features, Handler
from drain.intake.smtpd_write import REPLY_STOPPING, Committer, Gate
from drain.settings import Settings

__all__ = ["AuthGuard", "Features", "Ingress", "SessionCount"]

log = logging.getLogger(__name__)


def _credentials(settings: Settings) -> Credentials | None:
    if settings.smtpd_auth_user is None or settings.smtpd_auth_password is None:
        return None
    return Credentials(settings.smtpd_auth_user, settings.smtpd_auth_password)


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    cert, key = settings.smtpd_tls_cert, settings.smtpd_tls_key
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the STARTTLS certificate {cert} and key {key}: {exc}") from None
    return context


def check_config(settings: Settings) -> tuple[Credentials | None, ssl.SSLContext | None]:
    """The AUTH account and the STARTTLS context; ConfigError when they do not go together."""
    credentials = _credentials(settings)
    tls = _tls_context(settings)
    if credentials is not None and tls is None and not settings.smtpd_auth_plaintext:
        raise ConfigError("AUTH needs STARTTLS: set DRAIN_SMTPD_TLS_CERT and DRAIN_SMTPD_TLS_KEY, "
                          "or DRAIN_SMTPD_AUTH_PLAINTEXT=true on a trusted network")
    return credentials, tls


class Ingress:
    """The SMTP ingress server on its own event loop thread: `start()` and `stop()`, or `serve()`."""

    def __init__(self, api: Client, host: str, port: int, *, features: Features | None = None,
                 recheck_s: float = 1.0, hostname: str | None = None, guard: AuthGuard | None = None,
                 socks: Sequence[socket.socket] = (), sessions: SessionCount | None = None) -> None:
        """`socks`: listening sockets to serve (bound by the parent of several processes) instead
        of binding host:port; `sessions`: the session count shared with those processes."""
        settings = api.settings
        credentials, tls = check_config(settings)
        self.api = api
        self.host = host
        self.port = port
        self.features = features or Features.for_relay(settings)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="drain-smtpd")
        self.gate = Gate(api.intake_paused, self._executor, recheck_s)
        self.committer = Committer(api, self._executor)
        self.handler = Handler(api, self.committer, self.gate, self.features, auth=credentials is not None,
                               guard=guard, sessions=sessions)
        self.handler.guard.shared = api.redis  # AUTH failures count across processes
        self._socks = list(socks)
        self._smtp_options: dict[str, Any] = {
            "hostname": hostname or socket.gethostname(),
            "ident": "drain ESMTP",
            "data_size_limit": settings.smtpd_size_limit,
            "enable_SMTPUTF8": self.features.smtputf8,
            "decode_data": False,
            "tls_context": tls,
            "auth_required": credentials is not None,
            "auth_require_tls": not settings.smtpd_auth_plaintext,
            "authenticator": credentials,
            # A header line over 998 octets is taken and quarantined by the workers
            # (header.line-too-long), not refused at the door: the mail and its evidence are kept.
            "line_limit": settings.smtpd_size_limit + 3,
        }
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.Server] = []
        self._error: OSError | None = None

    def _protocol(self) -> _SMTP:
        return _SMTP(self.handler, loop=self._loop, **self._smtp_options)

    def start(self) -> Ingress:
        """Listen (port 0 picks a free port, then `port` tells which); returns once it does."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="drain-smtpd", daemon=True)
        self._thread.start()
        ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            self._executor.shutdown(wait=False)
            raise DrainError(f"cannot listen on {self.host}:{self.port}: {self._error.strerror or self._error}")
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            if self._socks:
                for sock in self._socks:
                    self._servers.append(loop.run_until_complete(loop.create_server(self._protocol, sock=sock)))
            else:
                self._servers.append(loop.run_until_complete(loop.create_server(self._protocol, self.host, self.port)))
        except OSError as exc:
            self._error = exc
            loop.close()
            ready.set()
            return
        self.port = int(self._servers[0].sockets[0].getsockname()[1])
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop listening, let transactions under way finish (up to grace_s; new ones get 421),
        then close every session."""
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(grace_s), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self, grace_s: float) -> None:
        for server in self._servers:
            server.close()
        self.gate.stopping = True
        log.info("stopping (pid %d): %d session(s) open, %d in a transaction", os.getpid(),
                 len(self.handler.open), sum(session.busy for session in self.handler.open))
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not (
                self.committer.idle and not any(session.busy for session in self.handler.open)):
            await asyncio.sleep(0.01)
        transports = [s.transport for s in self.handler.open if isinstance(s.transport, asyncio.WriteTransport)]
        for session in list(self.handler.open):  # idle between transactions: told, then closed
            if isinstance(session.transport, asyncio.WriteTransport) and not session.busy:
                session.transport.write(f"{REPLY_STOPPING}\r\n".encode())
                session.transport.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        flushed = time.monotonic() + 1.0  # replies already written (a 250) reach the client
        while any(t.get_write_buffer_size() for t in transports if not t.is_closing()) and time.monotonic() < flushed:
            await asyncio.sleep(0.01)

    def describe(self) -> str:
        tls = ", STARTTLS" if self._smtp_options["tls_context"] else ""
        auth = ", AUTH required" if self.handler.auth else ""
        offered = "".join(f", {name}" for name, on in (("SMTPUTF8", self.features.smtputf8),
                                                        ("8BITMIME", self.features.eightbitmime)) if on)
        return f"{self.host}:{self.port} (SIZE {self.api.settings.smtpd_size_limit}{offered}{tls}{auth})"

    def serve(self, on_ready: Callable[[Ingress], None] | None = None) -> None:
        """Listen until SIGINT or SIGTERM, then stop gracefully (main thread only)."""
        stopping = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            if on_ready is not None:
                on_ready(self)
            while not stopping.wait(1.0):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> Ingress:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
