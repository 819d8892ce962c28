"""A message as drain keeps it: raw RFC 5322 bytes plus an envelope, and the JSON form of that envelope."""

from __future__ import annotations

import json
from dataclasses import dataclass
from email.header import Header, decode_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.policy import SMTP, compat32
from email.utils import getaddresses

from drain.errors import InputError

_HEADER_PARSER = BytesHeaderParser(policy=compat32)


@dataclass(frozen=True)
class Envelope:
    """SMTP envelope: MAIL FROM and RCPT TO. An empty sender is the null sender (<>)."""

    sender: str
    recipients: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps([self.sender, list(self.recipients)], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        try:
            sender, recipients = json.loads(text)
            return cls(str(sender), tuple(str(r) for r in recipients))
        except (ValueError, TypeError) as exc:
            raise InputError(f"stored envelope is not valid: {exc}") from None

    @property
    def domain(self) -> str:
        """Destination domain of the first recipient, lowercased ('' if none)."""
        if not self.recipients:
            return ""
        return self.recipients[0].rpartition("@")[2].lower()


def header_text(value: object) -> str:
    """A header value from the compat32 parser as text: raw 8-bit bytes (kept there as
    surrogate escapes) read as UTF-8, as SMTPUTF8 mail carries them."""
    if isinstance(value, Header):
        return "".join(
            part.decode("utf-8", "replace") if isinstance(part, bytes) else part
            for part, _charset in decode_header(value)
        )
    text = str(value)
    if text.isascii():
        return text
    return text.encode("ascii", "surrogateescape").decode("utf-8", "replace")


def _addresses(values: list[str]) -> list[str]:
    return [addr for _name, addr in getaddresses([header_text(v) for v in values]) if addr]


def envelope_from_headers(raw: bytes) -> Envelope:
    """Sender from Return-Path/Sender/From, recipients from To, Cc and Bcc. Never raises.

    Uses the fast compat32 header parser; whatever it cannot make sense of yields an empty
    field, which validation then reports as a reason rather than crashing here.
    """
    try:
        headers = _HEADER_PARSER.parsebytes(raw)
        senders = (
            _addresses(headers.get_all("Return-Path", []))
            or _addresses(headers.get_all("Sender", []))
            or _addresses(headers.get_all("From", []))
        )
        recipients = _addresses(
            headers.get_all("To", []) + headers.get_all("Cc", []) + headers.get_all("Bcc", [])
        )
    except Exception:  # hostile headers: no envelope rather than a crash
        return Envelope("", ())
    return Envelope(senders[0] if senders else "", tuple(dict.fromkeys(recipients)))


def as_bytes(message: bytes | Message) -> bytes:
    """Raw bytes of a message handed in as bytes or as an email.message object."""
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    if isinstance(message, EmailMessage):
        return message.as_bytes(policy=SMTP)
    if isinstance(message, Message):
        return message.as_bytes()
    raise InputError(f"a message must be bytes or an email.message.Message, not {type(message).__name__}")
