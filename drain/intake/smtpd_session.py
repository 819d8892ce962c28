"""One SMTP session of the ingress: aiosmtpd's hooks (Handler) and the session class (_SMTP)
with drain's checks at connect, AUTH, MAIL, RCPT and DATA."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, Session, syntax
from aiosmtpd.smtp import Envelope as SMTPEnvelope

from drain import validate
from drain.errors import InputError, QueueFull
from drain.intake.api import Client
from drain.intake.smtpd_limits import AuthGuard, SessionCount
from drain.intake.smtpd_write import (
    REPLY_AUTH_BLOCKED,
    REPLY_AUTH_LOCKED,
    REPLY_BUSY,
    REPLY_ERROR,
    REPLY_FULL,
    REPLY_NOT_STORED,
    REPLY_TOO_MANY_RCPT,
    Committer,
    Gate,
)
from drain.message import Envelope
from drain.settings import Network, Settings
from drain.worker.delivery import Relay, RelayConfig, tls_context

log = logging.getLogger(__name__)

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
                 guard: AuthGuard | None = None, sessions: SessionCount | None = None) -> None:
        self.api = api
        self.committer = committer
        self.gate = gate
        self.features = features
        self.auth = auth
        self.guard = guard or AuthGuard()
        self.sessions = sessions or SessionCount()
        self.open: set[_SMTP] = set()  # this process's sessions, for a graceful stop

    async def auth_blocked(self, host: str) -> bool:
        """Too many failed AUTH attempts from this address, in any ingress process."""
        guard = self.guard
        if guard.blocked(host):
            return True
        if guard.shared is None:
            return False
        return await asyncio.get_running_loop().run_in_executor(self.gate.executor, guard.blocked_anywhere, host)

    async def at_connect(self, peer: Any) -> str | None:
        if not allowed(peer, self.api.settings.smtpd_allow):
            log.info("refused a connection from %s: not in DRAIN_SMTPD_ALLOW", _peer(peer))
            host = peer[0] if isinstance(peer, tuple) and peer else "your address"
            return f"554 5.7.1 {host} is not allowed to send mail here"
        if self.auth and await self.auth_blocked(_host(peer)):
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
            msg_id = await self.committer.store(raw, env, f"smtp {_host(session.peer)}")
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


_HOOK_NAMES: dict[type, list[str]] = {}


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
        self._in_data = False

    def __dir__(self) -> list[str]:
        """Only the command and AUTH methods (found once per class): aiosmtpd looks those up with
        dir() and inspect.getmembers() for every new session, which otherwise reads every
        attribute of the session object on each connection."""
        names = _HOOK_NAMES.get(type(self))
        if names is None:
            names = _HOOK_NAMES[type(self)] = sorted(
                name for name in object.__dir__(self) if name.startswith(("smtp_", "auth_")))
        return list(names)

    @property
    def busy(self) -> bool:
        """Within a mail transaction (MAIL given, DATA not yet answered): a graceful stop waits."""
        return self._in_data or (self.envelope is not None and self.envelope.mail_from is not None)

    async def _handle_client(self) -> None:
        assert self.session is not None
        door = self._door
        cap = door.api.settings.smtpd_max_sessions
        if not door.sessions.take(cap):
            log.warning("refused a connection from %s: %d sessions already open (DRAIN_SMTPD_MAX_SESSIONS)",
                        _peer(self.session.peer), door.sessions.total)
            await self._refuse(REPLY_BUSY)
            return
        door.open.add(self)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("session from %s in process %d", _peer(self.session.peer), os.getpid())
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
            door.open.discard(self)
            door.sessions.release()

    async def smtp_DATA(self, arg: str) -> None:
        self._in_data = True
        try:
            await super().smtp_DATA(arg)
        finally:
            self._in_data = False

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        assert self.session is not None
        guard, host = self._door.guard, _host(self.session.peer)
        if await self._door.auth_blocked(host):
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
        if guard.shared is not None:
            asyncio.get_running_loop().run_in_executor(self._door.gate.executor, guard.share_failure, host)
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


