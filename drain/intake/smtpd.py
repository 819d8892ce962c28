"""SMTP ingress (`drain smtpd`): programs in any language hand mail to drain over SMTP.

Each message takes the Python API's path (`Client.prepare`, then the store), and the 250
reply to DATA is sent only once Redis holds it; when it cannot be stored the reply is 451,
so the client keeps the message and tries again. Checks at the door: client network (554),
intake pause and Redis health (421, then the session is closed), STARTTLS and AUTH
(530/538), SIZE (552), envelope addresses by the workers' own rule (553), recipients per
message (452), concurrent sessions (421). Failed AUTH is slowed, ends the session after a few
tries, and an address with many failures is refused for a while; no credential is logged.
Long lines are taken (up to the size limit) so that the workers give their verdict on them.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import signal
import smtplib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, Session, syntax
from aiosmtpd.smtp import Envelope as SMTPEnvelope

from drain import validate
from drain.errors import ConfigError, DrainError, InputError, QueueFull
from drain.intake import door as intake
from drain.intake import rules
from drain.intake.api import Client
from drain.message import Envelope
from drain.settings import Network, Settings
from drain.worker.delivery import Relay, RelayConfig, tls_context
from drain.worker.dispatch import ensure_tokens

log = logging.getLogger(__name__)

# One Redis transaction carries at most this many messages / bytes.
BATCH_MESSAGES = 500
BATCH_BYTES = 8 * 1024 * 1024

REPLY_PAUSED = "421 4.3.2 drain is not taking mail now (intake paused); try again later"
REPLY_DOWN = "421 4.3.0 drain cannot reach its queue now; try again later"
REPLY_NOT_STORED = "451 4.3.0 message not stored: drain cannot reach its queue; try again later"
REPLY_ERROR = "451 4.3.0 drain hit an internal error; try again later"
REPLY_BUSY = "421 4.3.2 too many SMTP sessions at once; try again later"
REPLY_TOO_MANY_RCPT = "452 4.5.3 Too many recipients"
REPLY_FULL = "452 4.3.1 Insufficient system storage: drain's queue is full; try again later"
REPLY_AUTH_LOCKED = "421 4.7.0 too many failed AUTH attempts; closing"
REPLY_AUTH_BLOCKED = "421 4.7.0 too many failed AUTH attempts from your address; try again later"


class AuthGuard:
    """Slows down password guessing: a growing delay after each failed AUTH of a session, the
    session closed after `per_session` failures, and an address refused (at connect and at AUTH)
    once it has `per_address` failures within `window_s`. Kept in memory for at most
    `max_addresses` addresses (the oldest forgotten first)."""

    def __init__(self, delay_s: float = 1.0, per_session: int = 3, per_address: int = 10,
                 window_s: float = 600.0, max_addresses: int = 10_000) -> None:
        self.delay_s = delay_s
        self.per_session = per_session
        self.per_address = per_address
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        while times and now - times[0] > self.window_s:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def blocked(self, address: str) -> bool:
        return len(self._recent(address, time.monotonic())) >= self.per_address

    def failed(self, address: str) -> None:
        now = time.monotonic()
        times = self._recent(address, now)
        self._failures.pop(address, None)
        times.append(now)
        self._failures[address] = times  # newest last: the dict's order is by last failure
        while len(self._failures) > self.max_addresses:
            del self._failures[next(iter(self._failures))]


@dataclass(frozen=True)
class Features:
    """Optional SMTP extensions the ingress offers."""

    smtputf8: bool
    eightbitmime: bool

    @classmethod
    def for_relay(cls, settings: Settings) -> Features:
        """As configured; 'auto' follows the relay's EHLO (offered when the relay cannot be asked)."""
        smtputf8, eightbit = settings.smtpd_smtputf8, settings.smtpd_8bitmime
        if smtputf8 is None or eightbit is None:
            offered = relay_extensions(settings)
            if offered is not None:
                smtputf8 = ("smtputf8" in offered) if smtputf8 is None else smtputf8
                eightbit = ("8bitmime" in offered) if eightbit is None else eightbit
        return cls(smtputf8 is not False, eightbit is not False)


def relay_extensions(settings: Settings) -> frozenset[str] | None:
    """The relay's EHLO keywords, or None when it does not answer now."""
    relay = Relay(RelayConfig.from_url(settings.relay), timeout_s=min(settings.relay_timeout_s, 5.0),
                  tls=tls_context(settings.relay_tls_verify, settings.relay_ca_file))
    try:
        return relay.extensions()
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("relay %s did not answer EHLO (%s); offering SMTPUTF8 and 8BITMIME unless configured",
                    relay.config.redacted(), exc)
        return None
    finally:
        relay.close()


def allowed(peer: Any, networks: Sequence[Network]) -> bool:
    """Whether a socket peer (host, port, ...) is in one of the networks."""
    try:
        ip = ipaddress.ip_address(peer[0] if isinstance(peer, tuple) else peer)
    except (ValueError, TypeError, IndexError):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def _host(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


def _peer(peer: Any) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)


def _echo(address: str) -> str:
    """An address fit to quote in a reply: ASCII, one line, not too long."""
    return address.encode("ascii", "backslashreplace").decode("ascii")[:200]


def _sender(address: str | None) -> str:
    return "" if address in (None, "", "<>") else str(address)


class Gate:
    """Is intake open? The pause flag and Redis health, read again at most every `recheck_s`."""

    def __init__(self, client: redis.Redis, executor: ThreadPoolExecutor, recheck_s: float) -> None:
        self._client = client
        self._executor = executor
        self.recheck_s = recheck_s
        self._refusal: str | None = None
        self._checked = float("-inf")

    async def refusal(self) -> str | None:
        """None while intake is open, else the 421 reply to give."""
        if time.monotonic() - self._checked >= self.recheck_s:
            self._refusal = await asyncio.get_running_loop().run_in_executor(self._executor, self._read)
            self._checked = time.monotonic()
        return self._refusal

    def recheck(self) -> None:
        """Read the state again at the next question (after a failed write)."""
        self._checked = float("-inf")

    def _read(self) -> str | None:
        try:
            return REPLY_PAUSED if intake.is_paused(self._client) else None
        except redis.RedisError as exc:
            log.warning("intake closed: Redis: %s", exc)
            return REPLY_DOWN


_Pending = tuple[bytes, Envelope, "asyncio.Future[str]"]


class Committer:
    """Writes messages to Redis from worker threads, one transaction for all that arrive together.

    While a write is under way, further DATA completions queue and go in the next one: under
    load one round trip carries many messages, and a lone message waits for nothing.
    """

    def __init__(self, api: Client, executor: ThreadPoolExecutor, writers: int = 2) -> None:
        self._api = api
        self._executor = executor
        self._writers = writers
        self._active = 0
        self._pending: deque[_Pending] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def idle(self) -> bool:
        return not self._pending and self._active == 0

    async def store(self, raw: bytes, envelope: Envelope) -> str:
        """The message's id once Redis holds it; raises what the write raised (RedisError...)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()
        self._pending.append((raw, envelope, done))
        if self._active < self._writers:
            self._active += 1
            task = loop.create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._take()
                try:
                    ids = await loop.run_in_executor(self._executor, self._write, [(r, e) for r, e, _ in batch])
                except Exception as exc:
                    for _r, _e, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for (_r, _e, done), msg_id in zip(batch, ids, strict=True):
                    if not done.done():
                        done.set_result(msg_id)
        finally:
            self._active -= 1

    def _take(self) -> list[_Pending]:
        batch = [self._pending.popleft()]
        size = len(batch[0][0])
        while (self._pending and len(batch) < BATCH_MESSAGES
               and size + len(self._pending[0][0]) <= BATCH_BYTES):
            batch.append(self._pending.popleft())
            size += len(batch[-1][0])
        return batch

    def _write(self, items: list[tuple[bytes, Envelope]]) -> list[str]:
        active = rules.load(self._api.redis)
        self._api.memory.check()  # QueueFull: 452
        with self._api.memory.translating():
            ids = self._api.store.enqueue_many(
                (raw, env, rule.findings() if (rule := rules.first_match(active, raw, env)) else None)
                for raw, env in items)
        self._api.durable.confirm()  # the 250 waits for fsync or replicas when configured
        try:
            ensure_tokens(self._api.redis, self._api.settings)
        except redis.RedisError as exc:  # stored all the same; housekeeping tops jobs up
            log.warning("stored %d message(s) but queued no batch job: Redis: %s", len(ids), exc)
        return ids


class Credentials:
    """The one account AUTH accepts. Neither the user nor the password a client gave is logged
    (a password typed in the user field would be)."""

    def __init__(self, user: str, password: str) -> None:
        self._user = user.encode()
        self._password = password.encode()

    def __repr__(self) -> str:
        return f"Credentials(user={self._user.decode()!r}, password=***)"

    def __call__(self, server: SMTP, session: Session, envelope: SMTPEnvelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user_ok = hmac.compare_digest(auth_data.login, self._user)
            password_ok = hmac.compare_digest(auth_data.password, self._password)
            if user_ok and password_ok:
                return AuthResult(success=True, auth_data=auth_data.login)
        reply = server.auth_failed() if isinstance(server, _SMTP) else None
        return AuthResult(success=False, handled=False, message=reply)


class Handler:
    """aiosmtpd's hooks: drain's checks on the envelope, and the store at DATA."""

    def __init__(self, api: Client, committer: Committer, gate: Gate, features: Features, auth: bool,
                 guard: AuthGuard | None = None) -> None:
        self.api = api
        self.committer = committer
        self.gate = gate
        self.features = features
        self.auth = auth
        self.guard = guard or AuthGuard()
        self.sessions = 0

    async def at_connect(self, peer: Any) -> str | None:
        if not allowed(peer, self.api.settings.smtpd_allow):
            log.info("refused a connection from %s: not in DRAIN_SMTPD_ALLOW", _peer(peer))
            host = peer[0] if isinstance(peer, tuple) and peer else "your address"
            return f"554 5.7.1 {host} is not allowed to send mail here"
        if self.auth and self.guard.blocked(_host(peer)):
            log.info("refused a connection from %s: too many failed AUTH attempts", _peer(peer))
            return REPLY_AUTH_BLOCKED
        return await self.gate.refusal()

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: SMTPEnvelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        lines = [responses[0]]
        for line in responses[1:-1]:
            keyword = line[4:].split(" ", 1)[0].upper()
            if (keyword == "8BITMIME" and not self.features.eightbitmime) or (keyword == "AUTH" and not self.auth):
                continue
            lines.append(line)
        return [*lines, "250-PIPELINING", responses[-1]]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: SMTPEnvelope, address: str,
                          mail_options: list[str]) -> str:
        if "BODY=8BITMIME" in mail_options and not self.features.eightbitmime:
            return "555 5.5.4 BODY=8BITMIME is not offered here"
        memory = self.api.memory  # Redis nearly full: 452 (the session goes on)
        full = memory.refusal() if memory.known() else await asyncio.get_running_loop().run_in_executor(
            None, memory.refusal)
        if full is not None:
            return REPLY_FULL
        sender = _sender(address)
        if sender:  # the null sender <> is for bounces, and always taken
            refusal = self._address_refusal(sender, envelope.smtp_utf8, "sender", "5.1.7")
            if refusal:
                return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 sender OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SMTPEnvelope, address: str,
                          rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.api.settings.max_recipients:
            return REPLY_TOO_MANY_RCPT
        refusal = self._address_refusal(address, envelope.smtp_utf8, "recipient", "5.1.3")
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SMTPEnvelope) -> str:
        raw = envelope.original_content or b""
        limit = self.api.settings.smtpd_size_limit
        if len(raw) > limit:
            return f"552 5.3.4 message is {len(raw)} bytes, over the {limit}-byte limit"
        recipients = dict.fromkeys(envelope.rcpt_tos)  # each once, in order
        try:
            raw, env = self.api.prepare(raw, _sender(envelope.mail_from), recipients)
            if envelope.smtp_utf8:  # kept with the envelope: headers may be UTF-8, and it goes out with SMTPUTF8
                env = Envelope(env.sender, env.recipients, smtputf8=True)
        except InputError as exc:
            return f"554 5.6.0 message refused: {exc}"
        try:
            msg_id = await self.committer.store(raw, env)
        except QueueFull as exc:
            log.warning("a message from %s was not stored (452): %s", _peer(session.peer), exc)
            return REPLY_FULL
        except redis.RedisError as exc:
            self.gate.recheck()
            log.warning("a message from %s was not stored (451): Redis: %s", _peer(session.peer), exc)
            return REPLY_NOT_STORED
        except Exception:  # whatever it was, the client keeps the message
            log.exception("a message from %s was not stored (451)", _peer(session.peer))
            return REPLY_ERROR
        return f"250 2.0.0 OK queued as {msg_id}"

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %s: %s", type(error).__name__, error, exc_info=error)
        return REPLY_ERROR

    def _address_refusal(self, address: str, smtputf8: bool, role: str, status: str) -> str | None:
        if not address.isascii() and not smtputf8:
            return f"553 5.6.7 {role} <{_echo(address)}> is not ASCII: give SMTPUTF8 with MAIL FROM"
        allow_special = self.api.settings.allow_special_domains
        if validate.address_valid(address, allow_special):
            return None
        problem = validate.address_error(address, allow_special)
        return f"553 {status} {role} <{_echo(address)}> is not a valid address: {problem}"


class _SMTP(SMTP):
    """aiosmtpd's session with drain's checks at connect, AUTH and MAIL, where a 421 closes the session."""

    def __init__(self, handler: Handler, line_limit: int = SMTP.line_length_limit, **kwargs: Any) -> None:
        # Read before the stream reader is made: lines up to this long are taken, in DATA as in
        # commands (a command line over command_size_limit still gets 500).
        self.line_length_limit = line_limit
        super().__init__(handler, **kwargs)
        self._door = handler
        self._auth_failures = 0
        self._auth_refused = False
        self._auth_locked = False

    async def _handle_client(self) -> None:
        assert self.session is not None
        door = self._door
        if door.sessions >= door.api.settings.smtpd_max_sessions:
            log.warning("refused a connection from %s: %d sessions already open (DRAIN_SMTPD_MAX_SESSIONS)",
                        _peer(self.session.peer), door.sessions)
            await self._refuse(REPLY_BUSY)
            return
        door.sessions += 1
        try:
            try:
                refusal = await door.at_connect(self.session.peer)
            except Exception:
                log.exception("check at connect failed for %s", _peer(self.session.peer))
                refusal = "421 4.3.0 drain hit an internal error; try again later"
            if refusal is not None:
                await self._refuse(refusal)
                return
            await super()._handle_client()
        finally:
            door.sessions -= 1

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        assert self.session is not None
        guard, host = self._door.guard, _host(self.session.peer)
        if guard.blocked(host):
            await self._refuse(REPLY_AUTH_BLOCKED)
            return
        self._auth_refused = False
        await super().smtp_AUTH(arg)
        if self._auth_locked:
            if self.transport is not None:
                self.transport.close()
        elif self._auth_refused:
            # The next command is read only after a pause that grows with each failure.
            await asyncio.sleep(guard.delay_s * self._auth_failures)

    def auth_failed(self) -> str | None:
        """Count a refused AUTH (Credentials calls this); the reply to give instead of 535, if any."""
        assert self.session is not None
        guard, host = self._door.guard, _host(self.session.peer)
        self._auth_refused = True
        self._auth_failures += 1
        guard.failed(host)
        log.warning("AUTH refused from %s (failure %d of this session)", _peer(self.session.peer),
                    self._auth_failures)
        if self._auth_failures >= guard.per_session or guard.blocked(host):
            self._auth_locked = True
            return REPLY_AUTH_LOCKED
        return None

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        refusal = await self._door.gate.refusal()
        if refusal is not None:
            await self._refuse(refusal)
            return
        await super().smtp_MAIL(arg)

    async def _refuse(self, reply: str) -> None:
        await self.push(reply)
        if self.transport is not None:
            self.transport.close()


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


class Ingress:
    """The SMTP ingress server on its own event loop thread: `start()` and `stop()`, or `serve()`."""

    def __init__(self, api: Client, host: str, port: int, *, features: Features | None = None,
                 recheck_s: float = 1.0, hostname: str | None = None, guard: AuthGuard | None = None) -> None:
        settings = api.settings
        credentials = _credentials(settings)
        tls = _tls_context(settings)
        if credentials is not None and tls is None and not settings.smtpd_auth_plaintext:
            raise ConfigError("AUTH needs STARTTLS: set DRAIN_SMTPD_TLS_CERT and DRAIN_SMTPD_TLS_KEY, "
                              "or DRAIN_SMTPD_AUTH_PLAINTEXT=true on a trusted network")
        self.api = api
        self.host = host
        self.port = port
        self.features = features or Features.for_relay(settings)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="drain-smtpd")
        self.gate = Gate(api.redis, self._executor, recheck_s)
        self.committer = Committer(api, self._executor)
        self.handler = Handler(api, self.committer, self.gate, self.features, auth=credentials is not None,
                               guard=guard)
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
        self._server: asyncio.Server | None = None
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
            self._server = loop.run_until_complete(loop.create_server(self._protocol, self.host, self.port))
        except OSError as exc:
            self._error = exc
            loop.close()
            ready.set()
            return
        self.port = int(self._server.sockets[0].getsockname()[1])
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop listening, let writes under way finish (up to grace_s), then close every session."""
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(grace_s), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self, grace_s: float) -> None:
        assert self._server is not None
        self._server.close()
        deadline = time.monotonic() + grace_s
        while not self.committer.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
