"""A message as drain keeps it: raw RFC 5322 bytes plus an envelope, and the JSON form of that envelope."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.header import Header, decode_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.policy import SMTP, compat32
from email.utils import getaddresses

from drain.errors import InputError

_HEADER_PARSER = BytesHeaderParser(policy=compat32)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
# A str as json.dumps writes it (ASCII only): the envelope's JSON is written around these.
_JSON_STRING = json.encoder.encode_basestring_ascii


@dataclass(frozen=True)
class Envelope:
    """SMTP envelope: MAIL FROM and RCPT TO. An empty sender is the null sender (<>)."""

    sender: str
    recipients: tuple[str, ...]
    # Accepted with SMTPUTF8 (RFC 6531): its headers may carry raw UTF-8, and it must go out
    # with SMTPUTF8 too. Stored as a third element of the JSON form, only when set.
    smtputf8: bool = False
    # The Message-ID of the bytes it was read from, as the received event records it
    # (events.message_id), when the header scan that made this envelope met it on the way
    # (None: not known; '' = none). Not part of the envelope: not compared, not stored.
    message_id: str | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> str:
        """[sender, [recipients...]] (and 1 when SMTPUTF8) as compact ASCII JSON, written
        around each string's JSON form: what json.dumps(form, separators=(",", ":")) gives,
        for ~a quarter of the cost of one shared JSONEncoder (it is made for every message
        enqueued)."""
        tail = "],1]" if self.smtputf8 else "]]"
        return f"[{_JSON_STRING(self.sender)},[{','.join(map(_JSON_STRING, self.recipients))}{tail}"

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        try:
            form = json.loads(text)
        except ValueError as exc:
            raise InputError(f"stored envelope is not valid: {exc}") from None
        # Only the shape to_json writes: anything else unpacked would make up addresses
        # (an object's keys, a string's letters).
        if not (isinstance(form, list) and 2 <= len(form) <= 3 and isinstance(form[0], str)
                and isinstance(form[1], list) and all(isinstance(r, str) for r in form[1])):
            raise InputError("stored envelope is not valid: not [sender, [recipients...]]")
        return cls(form[0], tuple(form[1]), smtputf8=form[2:] == [1])

    @staticmethod
    def unique_recipients(recipients: tuple[str, ...]) -> tuple[str, ...]:
        """Each mailbox once, in order: the domain part is compared as drain keys domains
        (domain_key: without case, RFC 5321 2.4, and an IDN in either form, bücher.example or
        xn--bcher-kva.example, which each got a copy), the local part as written (the
        destination's to judge). The first spelling is kept."""
        seen: dict[str, str] = {}
        for address in recipients:
            local, at, domain = address.rpartition("@")
            seen.setdefault(f"{local}{at}{domain_key(domain)}" if at else address, address)
        return tuple(seen.values())

    @property
    def domain(self) -> str:
        """Destination domain of the first recipient, lowercased ('' if none)."""
        if not self.recipients:
            return ""
        return recipient_domain(self.recipients[0])

    def by_domain(self) -> list[tuple[str, tuple[str, ...]]]:
        """The recipients grouped by destination domain (lowercased), groups in the order their
        first recipient appears, recipients in their own order: one delivery per group."""
        groups: dict[str, list[str]] = {}
        for rcpt in self.recipients:
            groups.setdefault(recipient_domain(rcpt), []).append(rcpt)
        return [(domain, tuple(rcpts)) for domain, rcpts in groups.items()]


def domain_key(domain: str) -> str:
    """A destination domain as drain keys it (pauses, rates, groups of recipients, selectors):
    lowercased, a non-ASCII name in IDNA A-labels (bücher.example is xn--bcher-kva.example), so
    either form a recipient or the operator wrote names one domain; left lowercased when it
    cannot be encoded."""
    domain = domain.lower()
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def recipient_domain(address: str) -> str:
    """The domain_key of an address's domain part ('' when it has none)."""
    return domain_key(address.rpartition("@")[2])


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


_BARE = re.compile(r"^\s*([^\s<>@,;:]+@[^\s<>@,;:]+)\s*$")
_ANGLED = re.compile(r"^[^<>@]*<([^\s<>@,;:]+@[^\s<>@,;:]+)>\s*$")


_NEEDS_PARSER = re.compile(r'["()\\;:]')


def _simple(value: str) -> list[str] | None:
    """Addresses of a plain field ("a@b, Name <c@d>") without the full RFC 5322 parser, or
    None when the field has quotes, comments, groups or anything else that needs it."""
    if _NEEDS_PARSER.search(value):
        return None
    found = []
    for part in value.split(","):
        match = _BARE.match(part) or _ANGLED.match(part)
        if match is None:
            return None
        found.append(match.group(1))
    return found


def _addresses(values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        text = header_text(value)
        out.extend(_field_addresses(text) if len(text) <= _CACHED_FIELD else _read_field(text))
    return out


def _read_field(text: str) -> tuple[str, ...]:
    simple = _simple(text)
    return tuple(simple if simple is not None else [a for _n, a in getaddresses([text]) if a])


# A batch's From (often its Sender and Cc too) is the same text message after message: a
# short field is read once (the cache holds at most 1024 fields of at most this many characters).
_CACHED_FIELD = 256
_field_addresses = functools.lru_cache(maxsize=1024)(_read_field)


_WORD = r"[A-Za-z0-9]+"
_ADDR = rf"{_WORD}(?:[._+-]{_WORD})*@{_WORD}(?:[.-]{_WORD})*"
_MAILBOX = rf"(?:{_ADDR}|{_WORD}(?: {_WORD})* ?<{_ADDR}>)"
_PLAIN_FIELD = re.compile(rf" *{_MAILBOX}(?: *, *{_MAILBOX})* *")


def plain_address_field(value: str) -> bool:
    """Whether an address field's value is only plain mailboxes ("a.b@c.d", "Name Two
    <a@c.d>", separated by commas): ASCII letters and digits, with dots, hyphens, "+" and
    "_" only between them. The strict header parser reads such a value without fault (its
    known crashes need quotes, dots or other specials in a display name, encoded words,
    groups, comments or routes), so validation need not run it on one: it costs ~100 µs
    per new value."""
    return _PLAIN_FIELD.fullmatch(value) is not None


_ENVELOPE_FIELDS = frozenset({"return-path", "sender", "from", "to", "cc", "bcc", "resent-sender",
                              "resent-from", "resent-to", "resent-cc", "resent-bcc"})
_ENVELOPE_NAMES = frozenset(name.encode() for name in _ENVELOPE_FIELDS)
# The bytes an envelope field's line may start with: its name's first letter in either case,
# or the white space that strip() takes off before it (a space or tab folds the line instead).
_ENVELOPE_STARTS = frozenset(bytes([c]) for name in _ENVELOPE_NAMES for c in (name[0], name[0] - 32)) | {
    b"\r", b"\x0b", b"\x0c"}
# The first blank line ends the header block: found from its LF (a regex that starts with a
# literal is searched for quickly; `\r?\n\r?\n` tried every byte, ~2.5 µs for a 2 KB message).
_BLANK_LINE_LF = re.compile(rb"\n\r?\n")


# The bytes a Message-ID line starts with (the name at the very start of the line, any case).
_MESSAGE_ID_STARTS = frozenset({b"M", b"m"})
_MESSAGE_ID = b"message-id:"
_MESSAGE_ID_MAX = 300  # events.TEXT_MAX, the longest header text an event keeps
MESSAGE_ID_FIELD = "message-id"  # the key _address_fields gives the first Message-ID line's text under


def _address_fields(head: bytes) -> dict[str, list[str]]:
    """The address fields of a header block, unfolded, by lowercased name (a plain scan:
    the envelope is needed for every message at enqueue time, so no full parser here); and
    under MESSAGE_ID_FIELD, the text of the first line that starts with `message-id:` in any
    case, as events.message_id reads it (up to a CR, stripped, at most 300 characters)."""
    fields: dict[str, list[str]] = {}
    current: list[str] | None = None
    resent = 0  # 0: no Resent-* field yet; 1: in the first (newest) resent block; 2: past it
    # A line's CR (of CRLF) needs no stripping of its own: strip() takes it off every part kept.
    for line in head.split(b"\n"):
        first = line[:1]
        if first in _MESSAGE_ID_STARTS and line[:11].lower() == _MESSAGE_ID and MESSAGE_ID_FIELD not in fields:
            text = line[11:].partition(b"\r")[0].decode("utf-8", "replace").strip()
            fields[MESSAGE_ID_FIELD] = [text[:_MESSAGE_ID_MAX]]
        if first in (b" ", b"\t"):
            if current is not None:
                current[-1] += " " + line.strip().decode("ascii", "surrogateescape")
            continue
        if not resent and first not in _ENVELOPE_STARTS:  # Date, Message-ID, DKIM-..., X-...: not one
            current = None
            continue
        name, colon, value = line.partition(b":")
        key = name.strip().lower()
        if key[:7] == b"resent-":
            resent = resent or 1
        elif resent:
            resent = 2
        if colon and key in _ENVELOPE_NAMES and not (resent == 2 and key[:7] == b"resent-"):
            current = fields.setdefault(key.decode(), [])
            current.append(value.strip().decode("ascii", "surrogateescape"))
        else:
            current = None
    return fields


def envelope_from_headers(raw: bytes) -> Envelope:
    """Sender from Return-Path/Sender/From, recipients from To, Cc and Bcc (or from the newest
    block of Resent-* fields, when the message has one). Never raises.

    Whatever cannot be made sense of yields an empty field, which validation then reports
    as a reason rather than crashing here.
    """
    try:
        split = _BLANK_LINE_LF.search(raw)  # where _BLANK_LINE would find it: from a CR before
        end = len(raw) if split is None else split.start() - (split.start() > 0 and raw[split.start() - 1] == 13)
        fields = _address_fields(raw[:end])
        get = fields.get
        # The resent block's sender first: a Return-Path there is the original delivery's.
        # A field that is not there is not read (the common block has From and To alone).
        resent = (_addresses(get("resent-sender", ())) or _addresses(get("resent-from", ()))
                  if "resent-sender" in fields or "resent-from" in fields else None)
        if resent:
            senders = resent
        elif "return-path" in fields and fields["return-path"][0].strip() == "<>":
            senders = [""]  # the null sender: this is a bounce
        elif "return-path" in fields or "sender" in fields:
            senders = (
                _addresses(get("return-path", ()))
                or _addresses(get("sender", ()))
                or _addresses(get("from", ()))
            )
        else:
            senders = _addresses(get("from", ()))
        # A resent message goes to its newest Resent-To/Cc/Bcc only (as sendmail -t takes it).
        kind = "resent-" if ("resent-to" in fields or "resent-cc" in fields or "resent-bcc" in fields) else ""
        recipients = _addresses([*get(f"{kind}to", ()), *get(f"{kind}cc", ()), *get(f"{kind}bcc", ())])
        # Without a blank line events.message_id reads only the first 64 KB: not known here.
        mid = get(MESSAGE_ID_FIELD, [""])[0] if split is not None else None
    except Exception:  # hostile headers: no envelope rather than a crash
        return Envelope("", ())
    return Envelope(senders[0] if senders else "", tuple(dict.fromkeys(recipients)), message_id=mid)


_BCC_FIELD = re.compile(rb"^(?:resent-)?bcc[ \t]*:", re.IGNORECASE | re.MULTILINE)


def without_bcc(raw: bytes) -> bytes:
    """The message as delivered: Bcc (and Resent-Bcc) fields removed with their folded
    lines, as sendmail -t and Postfix's cleanup do. Only the header block is read; a
    message without such a field is returned as is (the same object)."""
    split = _BLANK_LINE.search(raw)
    # The header block with each field's own line ending; the blank line and body follow.
    end = len(raw) if split is None else split.start() + (2 if raw[split.start()] == 13 else 1)
    if _BCC_FIELD.search(raw, 0, end) is None:
        return raw
    kept: list[bytes] = []
    dropping = False
    for line in raw[:end].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = _BCC_FIELD.match(line) is not None
        if not dropping:
            kept.append(line)
    return b"".join(kept) + raw[end:]


def as_bytes(message: bytes | Message) -> bytes:
    """Raw bytes of a message handed in as bytes or as an email.message object."""
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    if isinstance(message, EmailMessage):
        return message.as_bytes(policy=SMTP)
    if isinstance(message, Message):
        return message.as_bytes()
    raise InputError(f"a message must be bytes or an email.message.Message, not {type(message).__name__}")
