"""SMTP delivery to the configured relay, and the classification of every outcome.

The relay's URL and TLS settings are read in drain.worker.relayconfig (imported from here too)."""

from __future__ import annotations

import contextlib
import json
import logging
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from typing import Literal

from rq.timeouts import JobTimeoutException

from drain.worker.addresses import quote_address
from drain.worker.relayconfig import RelayConfig as RelayConfig
from drain.worker.relayconfig import tls_context as tls_context
from drain.worker.smtpio import read_reply, send
from drain.worker.wire import data_block as data_block
from drain.worker.wire import data_pieces, wire_form

log = logging.getLogger(__name__)

Kind = Literal["delivered", "deferred", "bounced"]
_DROPPED = (smtplib.SMTPServerDisconnected, ConnectionResetError, BrokenPipeError)


class RelayTimeout(smtplib.SMTPException):
    """The relay stopped answering within the timeout."""


class RelayLostReply(smtplib.SMTPException):
    """The relay hung up after the message's final dot, before its reply: it may have taken
    the message, so it is deferred rather than sent again at once."""


class RelayGarbled(smtplib.SMTPResponseException):
    """A reply that is not SMTP (no three-digit code): the session is closed, since which
    reply answers which command can no longer be told; the message is deferred."""


class RelayAuthMissing(smtplib.SMTPResponseException):
    """Credentials are configured but the relay offers no AUTH: the session's trouble, deferred."""


# Replies that speak about the session or the configuration, never about one message, even
# when they come at MAIL FROM, RCPT TO or DATA: command trouble (500, 502, 503, 504, 555)
# and "authenticate first" / "encrypt first" (530, 538). They defer; they never bounce.
SESSION_CODES = frozenset({500, 502, 503, 504, 530, 538, 555})


def permanent(code: int) -> bool:
    """Whether a reply to MAIL FROM, RCPT TO or DATA refuses this message for good."""
    return 500 <= code < 600 and code not in SESSION_CODES


@dataclass(frozen=True, slots=True)
class Result:
    kind: Kind
    code: int = 0
    text: str = ""
    # Recipients the relay refused while it took the message for others: address -> (code, text).
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    # The failure is the relay's or drain's (connection, TLS, AUTH, a missing extension, a
    # session reply, a local error), not the destination's: it counts on the relay breaker.
    relay_fault: bool = False

    @property
    def reply(self) -> str:
        """One line for logs and records."""
        if self.refused:
            return json.dumps({r: f"{c} {t}" for r, (c, t) in self.refused.items()})
        return f"{self.code} {self.text}".strip()


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:300]


def classify_code(code: int) -> Kind:
    return "bounced" if permanent(code) else "deferred"


class Relay:
    """One SMTP session to the relay, opened lazily and reused across messages."""

    def __init__(self, config: RelayConfig, timeout_s: float = 30.0, helo_name: str | None = None,
                 tls: ssl.SSLContext | None = None, connect_timeout_s: float | None = None) -> None:
        self.config = config
        self.timeout_s = timeout_s
        # Connecting and the greeting get their own (shorter) limit: a relay that is down or
        # dropped off the network must not hold a worker for the whole SMTP step timeout.
        self.connect_timeout_s = min(timeout_s, connect_timeout_s or timeout_s)
        self.helo_name = helo_name or socket.gethostname()
        # TLS for smtps and STARTTLS: certificate and host name verified unless told otherwise.
        self.tls = tls or ssl.create_default_context()
        self._smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        smtp: smtplib.SMTP
        # Connecting (and TLS for smtps, and the greeting) within the connect timeout; every
        # step after it within the step timeout.
        if cfg.scheme == "smtps":
            smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, local_hostname=self.helo_name,
                                    timeout=self.connect_timeout_s, context=self.tls)
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, local_hostname=self.helo_name, timeout=self.connect_timeout_s)
        try:
            smtp.timeout = self.timeout_s
            if smtp.sock is not None:
                smtp.sock.settimeout(self.timeout_s)
            code, reply = smtp.ehlo()
            if not 200 <= code < 300:
                # Refused at EHLO: try HELO, and a refusal there is the session's (deferred),
                # not a 503 at MAIL FROM later that could pass for a verdict on the message.
                code, reply = smtp.helo()
                if not 200 <= code < 300:
                    raise smtplib.SMTPHeloError(code, reply)
            if cfg.scheme == "smtp+starttls":
                smtp.starttls(context=self.tls)
                smtp.ehlo()
            if cfg.username:
                if not smtp.has_extn("auth"):
                    raise RelayAuthMissing(530, "relay offers no AUTH; check the credentials in DRAIN_RELAY")
                smtp.login(cfg.username, cfg.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def extensions(self) -> frozenset[str]:
        """The relay's EHLO keywords, lowercased (connects if needed; raises OSError or SMTPException)."""
        if self._smtp is not None and self._smtp.sock is None:
            self._smtp = None  # smtplib closed it (e.g. after a 421)
        if self._smtp is None:
            self._smtp = self._connect()
        return frozenset(self._smtp.esmtp_features)

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    def _send_once(self, sender: str, recipients: list[str], raw: bytes,
                   smtputf8: bool = False) -> dict[str, tuple[int, bytes]]:
        if self._smtp is not None and self._smtp.sock is None:
            self._smtp = None  # smtplib closed it (e.g. after a 421)
        if self._smtp is None:
            self._smtp = self._connect()
        smtp = self._smtp
        options: list[str] = []
        if smtp.has_extn("8bitmime") and not raw.isascii():
            options.append("BODY=8BITMIME")
        if smtputf8 or not (sender + "".join(recipients)).isascii():
            options.append("SMTPUTF8")  # smtplib refuses it (SMTPNotSupportedError) if not offered
        try:
            return _transaction(smtp, sender, recipients, raw, options)
        except _DROPPED as exc:
            self._drop()
            if isinstance(exc.__context__, TimeoutError):
                # A relay that stopped answering is not retried at once: the message may
                # have been taken, and a tarpit would only hold the worker longer.
                raise RelayTimeout(f"relay did not answer in {self.timeout_s:g}s") from exc
            raise

    def _send_again(self, sender: str, recipients: list[str], wire: bytes,
                    smtputf8: bool) -> dict[str, tuple[int, bytes]]:
        """One more try, at once, on a new session when the reused one turns out dropped
        (the relay closed it while idle). A hang-up after the final dot is RelayLostReply
        and is not tried again."""
        try:
            return self._send_once(sender, recipients, wire, smtputf8)
        except _DROPPED as exc:
            log.warning("relay connection dropped (%s); reconnecting, attempt 2", exc)
        return self._send_once(sender, recipients, wire, smtputf8)

    def send(self, sender: str, recipients: list[str], raw: bytes, smtputf8: bool = False) -> Result:
        """Hand one message to the relay; every failure becomes a Result, never an exception.

        Only a permanent reply to MAIL FROM, RCPT TO or DATA bounces; everything else (no
        connection, TLS, AUTH, a missing extension, a session reply, our own error) defers.
        """
        try:
            refused = self._send_again(sender, recipients, wire_form(raw), smtputf8)
        except smtplib.SMTPRecipientsRefused as exc:
            replies = {r: (int(c), _text(t)) for r, (c, t) in exc.recipients.items()}
            final = all(permanent(c) for c, _t in replies.values())
            code, text = next(iter(replies.values()), (0, ""))
            session = any(c in SESSION_CODES for c, _t in replies.values())
            return Result("bounced" if final else "deferred", code, text, refused=replies, relay_fault=session)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            kind = classify_code(exc.smtp_code)
            return Result(kind, exc.smtp_code, _text(exc.smtp_error), relay_fault=exc.smtp_code in SESSION_CODES)
        except smtplib.SMTPNotSupportedError as exc:
            # The relay lacks an extension we need (STARTTLS, AUTH, SMTPUTF8): its trouble or
            # the configuration's, and it may come back (a failover, a fixed certificate).
            self._drop()
            return Result("deferred", 0, _text(f"relay lacks what this needs: {exc}"), relay_fault=True)
        except smtplib.SMTPResponseException as exc:
            # A refusal at greeting, HELO, STARTTLS or AUTH (even a 535) is about this relay
            # session or its configuration, not the message.
            self._drop()
            return Result("deferred", exc.smtp_code, _text(exc.smtp_error), relay_fault=True)
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            return Result("deferred", 0, _failure(exc), relay_fault=True)
        except JobTimeoutException:
            self._drop()
            raise  # the job's time limit: the batch gives the message a strike (drain.batch)
        except Exception as exc:  # drain's own fault (a bug, an encoding it could not do): never the message's
            log.exception("sending to %s failed inside drain", self.config.redacted())
            self._drop()
            return Result("deferred", 0, _failure(exc), relay_fault=True)
        if refused:
            replies = {r: (int(c), _text(t)) for r, (c, t) in refused.items()}
            return Result("delivered", 250, "accepted for some recipients", refused=replies)
        return Result("delivered", 250, "ok")


def _transaction(smtp: smtplib.SMTP, sender: str, recipients: list[str], wire: bytes,
                 options: list[str]) -> dict[str, tuple[int, bytes]]:
    """smtplib's SMTP.sendmail, step for step (the same replies raise the same exceptions),
    except that the DATA bytes are prepared here in one pass (data_block) and sent as they
    are (SMTP.data would run two regex passes over the whole message again), and that with
    PIPELINING (RFC 2920) MAIL FROM, every RCPT TO and DATA go out in one write. The replies
    are then read in order and judged as one at a time; every reply is read before the next
    step, as the RFC asks (a DATA taken after all recipients were refused gets a lone dot).
    Replies are read by drain.worker.smtpio.read_reply (getreply's result, less Python)."""
    smtp.ehlo_or_helo_if_needed()
    esmtp_opts = [f"size={len(wire)}"] if smtp.does_esmtp and smtp.has_extn("size") else []
    if smtp.does_esmtp:
        esmtp_opts.extend(options)
    pipelined = smtp.does_esmtp and smtp.has_extn("pipelining")
    if pipelined:
        commands = [_command("mail", _mail_args(smtp, sender, esmtp_opts))]
        commands += [_command("rcpt", f"TO:{quote_address(rcpt)}") for rcpt in recipients]
        send(smtp, "".join([*commands, "data\r\n"]).encode(smtp.command_encoding))
        code, resp = read_reply(smtp)
    else:
        code, resp = smtp.mail(sender, esmtp_opts)
    _smtp_reply(smtp, code, resp)
    if code != 250:
        if pipelined and code != 421:
            _drain_replies(smtp, len(recipients) + 1)
        _end(smtp, code)
        raise smtplib.SMTPSenderRefused(code, resp, sender)
    refused: dict[str, tuple[int, bytes]] = {}
    for rcpt in recipients:
        code, resp = read_reply(smtp) if pipelined else smtp.rcpt(rcpt)
        _smtp_reply(smtp, code, resp)
        if code not in (250, 251):
            refused[rcpt] = (code, resp)
        if code == 421:
            smtp.close()
            raise smtplib.SMTPRecipientsRefused(refused)
    if len(refused) == len(recipients):
        if pipelined:
            _drain_replies(smtp, 1)
        _end(smtp, 0)
        raise smtplib.SMTPRecipientsRefused(refused)
    if not pipelined:
        smtp.putcmd("data")
    code, resp = read_reply(smtp)
    _smtp_reply(smtp, code, resp)
    if code != 354:
        _end(smtp, code)
        raise smtplib.SMTPDataError(code, resp)
    send(smtp, *data_pieces(wire))
    try:
        code, resp = read_reply(smtp)
    except smtplib.SMTPServerDisconnected as exc:
        if isinstance(exc.__context__, TimeoutError):
            raise  # RelayTimeout (in Relay._send_once)
        raise RelayLostReply("relay hung up after the end of the message, before its reply") from exc
    _smtp_reply(smtp, code, resp)
    if not 200 <= code < 300:  # any 2xx took it: deferring would send it again and again
        _end(smtp, code)
        raise smtplib.SMTPDataError(code, resp)
    return refused


def _smtp_reply(smtp: smtplib.SMTP, code: int, resp: bytes) -> None:
    """smtplib gives -1 for a reply without a three-digit code: close the session (the next
    replies could answer other commands than drain would take them for) and defer."""
    if code == -1:
        smtp.close()
        raise RelayGarbled(code, resp)


def _drain_replies(smtp: smtplib.SMTP, count: int) -> None:
    """Read the replies left to pipelined commands after a refusal already decided the
    outcome; a DATA taken anyway gets a lone dot. A relay that hangs up meanwhile changes
    nothing (smtplib closes the session; the caller's RSET finds it closed)."""
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        for _ in range(count):
            code, _resp = smtp.getreply()
        if code == 354:
            smtp.send(b".\r\n")
            smtp.getreply()


def _mail_args(smtp: smtplib.SMTP, sender: str, options: list[str]) -> str:
    """MAIL FROM's argument as smtplib's SMTP.mail writes it (SMTPUTF8 switches the
    session's command encoding to UTF-8, or is refused if the relay lacks it)."""
    if not options:
        return f"FROM:{quote_address(sender)}"
    if any(option.lower() == "smtputf8" for option in options):
        if not smtp.has_extn("smtputf8"):
            raise smtplib.SMTPNotSupportedError("SMTPUTF8 not supported by server")
        smtp.command_encoding = "utf-8"
    return f"FROM:{quote_address(sender)} {' '.join(options)}"


def _command(verb: str, args: str) -> str:
    """One command line, refused like smtplib's putcmd refuses it if it holds CR or LF."""
    if "\r" in args or "\n" in args:
        raise ValueError(f"command and arguments contain prohibited newline characters: {args!r}")
    return f"{verb} {args}\r\n"


def _end(smtp: smtplib.SMTP, code: int) -> None:
    """After a refusal: close on 421 (the relay is leaving), else RSET (as sendmail does)."""
    if code == 421:
        smtp.close()
        return
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()


def _failure(exc: BaseException) -> str:
    return _text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
