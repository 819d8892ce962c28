"""Verdicts on raw message bytes: any input gives a verdict with reason codes, never a crash.

Checks run cheapest first and the expensive ones (MIME parse, address validation) only
when the limits allow. Each finding has a code and a short piece of evidence; the code's
severity (quarantine, or only recorded) comes from SEVERITY unless settings override it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from email.errors import (
    CloseBoundaryNotFoundDefect,
    NoBoundaryInMultipartDefect,
    StartBoundaryNotFoundDefect,
)
from email.message import Message
from typing import Any

from drain.addressrule import address_error as address_error
from drain.addressrule import address_valid as address_valid
from drain.addressrule import encoded_newline, mailboxes, strict_parse_failure, valid_cached
from drain.errors import ConfigError
from drain.linescan import clean_field_names, endings, lines_within
from drain.message import Envelope, header_text, plain_address_field
from drain.mimeskeleton import structure
from drain.settings import Settings

QUARANTINE = "quarantine"
RECORD = "record"

# Every reason code drain can give, with what it does by default.
SEVERITY: dict[str, str] = {
    "size.over-limit": QUARANTINE,
    "body.nul-byte": QUARANTINE,
    "body.bare-cr-lf": QUARANTINE,
    "header.malformed": QUARANTINE,
    "header.line-too-long": QUARANTINE,
    "body.line-too-long": QUARANTINE,
    "header.too-many": QUARANTINE,
    "header.non-ascii-unencoded": QUARANTINE,
    "header.missing-from": QUARANTINE,
    "header.duplicate-singleton": QUARANTINE,
    "header.encoded-newline": QUARANTINE,
    "header.missing-date": RECORD,
    "header.missing-message-id": RECORD,
    "mime.missing-boundary": QUARANTINE,
    "mime.boundary-not-found": RECORD,
    "mime.boundary-nested": QUARANTINE,
    "mime.nesting-too-deep": QUARANTINE,
    "mime.too-many-parts": QUARANTINE,
    "address.invalid-sender": QUARANTINE,
    "address.invalid-recipient": QUARANTINE,
    "address.no-recipient": QUARANTINE,
    "parse.crash": QUARANTINE,
    # Given by workers, not by the checks below: a message that killed or hung its worker,
    # and a message an operator rule matched.
    "poison.crash": QUARANTINE,
    "poison.timeout": QUARANTINE,
    "rule.match": QUARANTINE,
}


def severity_with(quarantine: tuple[str, ...] = (), record: tuple[str, ...] = ()) -> dict[str, str]:
    """SEVERITY with an operator's overrides; unknown codes are a configuration error."""
    unknown = sorted((set(quarantine) | set(record)) - set(SEVERITY))
    if unknown:
        raise ConfigError(f"unknown reason codes in DRAIN_QUARANTINE_CODES/DRAIN_RECORD_CODES: {', '.join(unknown)}")
    table = dict(SEVERITY)
    table.update(dict.fromkeys(record, RECORD))
    table.update(dict.fromkeys(quarantine, QUARANTINE))
    return table

# Fields RFC 5322 section 3.6 allows at most once.
SINGLETONS = frozenset(
    {b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc", b"subject", b"date", b"message-id",
     b"in-reply-to", b"references", b"orig-date"}
)
ADDRESS_FIELDS = ("From", "Sender", "Reply-To", "To", "Cc")
_ADDRESS_NAMES = frozenset(name.lower() for name in ADDRESS_FIELDS)
MAX_LINE = 998
_FIELD_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+$")
# The first blank line, from its first LF (a leading literal is searched for in C; \r?\n\r?\n was tried at every byte).
_BLANK_LF = re.compile(rb"\n\r?\n")
_EVIDENCE = 80
NEWLINE = b"\n"


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 25 * 1024 * 1024
    max_headers: int = 500
    max_mime_depth: int = 50
    max_mime_parts: int = 1000
    # Allow special-use and test domains (.test, .local, ...) in addresses.
    allow_special_domains: bool = False
    # Look recipient domains up in DNS (MX, then A/AAAA), answers cached.
    check_dns: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_bytes=settings.max_message_bytes,
            max_headers=settings.max_header_count,
            max_mime_depth=settings.max_mime_depth,
            max_mime_parts=settings.max_mime_parts,
            allow_special_domains=settings.allow_special_domains,
            check_dns=settings.check_dns,
        )


def configured(settings: Settings) -> tuple[Limits, dict[str, str]]:
    """The limits and the severity table the settings give: what `check` takes after the message."""
    return Limits.from_settings(settings), severity_with(settings.quarantine_codes, settings.record_codes)


@dataclass(frozen=True)
class Finding:
    code: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail}


@dataclass(frozen=True)
class Verdict:
    findings: tuple[Finding, ...] = ()
    severity: dict[str, str] = field(default_factory=lambda: SEVERITY, compare=False, repr=False)

    @property
    def reasons(self) -> list[str]:
        """Codes that send the message to quarantine, in the order found, each once."""
        return list(dict.fromkeys(f.code for f in self.findings if self.severity.get(f.code) == QUARANTINE))

    @property
    def recorded(self) -> list[str]:
        return list(dict.fromkeys(f.code for f in self.findings if self.severity.get(f.code) != QUARANTINE))

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def label(self) -> str:
        return "ok" if self.ok else "quarantine"

    def evidence_json(self) -> str:
        return json.dumps([f.as_dict() for f in self.findings], separators=(",", ":"))


def _excerpt(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\x00", "\\0")
    return text if len(text) <= _EVIDENCE else text[: _EVIDENCE - 1] + "…"


def check(raw: bytes, envelope: Envelope, limits: Limits | None = None,
          severity: dict[str, str] | None = None) -> Verdict:
    """The verdict on one message. Never raises: a failure inside a check is `parse.crash`."""
    limits = limits or Limits()
    findings: list[Finding] = []
    try:
        findings.extend(_checks(raw, envelope, limits))
    except RecursionError:
        findings.append(Finding("mime.nesting-too-deep", "structure too deep to walk"))
    except Exception as exc:  # the email package raises on some hostile input
        findings.append(Finding("parse.crash", _excerpt(f"{type(exc).__name__}: {exc}")))
    return Verdict(tuple(findings), severity or SEVERITY)


def _checks(raw: bytes, envelope: Envelope, limits: Limits) -> Iterator[Finding]:
    if len(raw) > limits.max_bytes:
        size = f"{len(raw)} bytes" if len(raw) > limits.max_bytes + 1 else "more"  # files are read to limit + 1
        yield Finding("size.over-limit", f"{size} > {limits.max_bytes}")
        return
    nul = raw.find(b"\x00")
    if nul >= 0:
        yield Finding("body.nul-byte", f"line {raw.count(NEWLINE, 0, nul) + 1}")
    # A lone CR is never a line end (LF-only files are, and go out as CRLF): in an LF-only
    # message it would reach the relay as it is (CR . CR ends DATA for some servers).
    kind = endings(raw)
    lone_cr = kind == "mixed" and raw.count(b"\r") != raw.count(b"\r\n")
    if kind == "mixed":
        yield Finding("body.bare-cr-lf", _bare_line_evidence(raw))

    split = _BLANK_LF.search(raw)
    start = split.start() - (split.start() > 0 and raw[split.start() - 1] == 13) if split else len(raw)  # at its CR
    head = raw[:start]
    if split is not None and len(raw) - split.end() > MAX_LINE:
        yield from _long_body_line(raw, split.end())
    names, header_ok = yield from _header_lines(head, limits, envelope.smtputf8)
    if not header_ok:
        return
    counts: dict[bytes, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    if b"from" not in counts:
        yield Finding("header.missing-from")
    if b"date" not in counts:
        yield Finding("header.missing-date")
    if b"message-id" not in counts:
        yield Finding("header.missing-message-id")
    dupes = sorted(n.decode() for n, c in counts.items() if c > 1 and n in SINGLETONS)
    if dupes:
        yield Finding("header.duplicate-singleton", ", ".join(dupes))

    message = structure(raw, bare_cr=lone_cr, kind=kind)
    yield from _mime(message, limits)
    yield from _addresses(message, envelope, limits)


def _long_body_line(raw: bytes, start: int) -> Iterator[Finding]:
    """The first body line over 998 octets (RFC 5322 2.1.1), CRLF not counted: relays that
    enforce the limit refuse the whole message at the end of DATA (a 500, the session's
    trouble to drain, which would defer it again and again). The lengths are taken in C
    first (drain.linescan.lines_within); lines are walked in Python only when one may be long."""
    if lines_within(raw, start, MAX_LINE):
        return
    lines = raw[start:].split(NEWLINE)
    head_lines = raw.count(NEWLINE, 0, start)
    for number, line in enumerate(lines, head_lines + 1):
        octets = len(line) - line.endswith(b"\r")
        if octets > MAX_LINE:
            yield Finding("body.line-too-long", f"line {number}: {octets} octets: {_excerpt(line)}")
            return


def _bare_line_evidence(raw: bytes) -> str:
    if b"\r\n" not in raw:  # an LF-only (or CR-only) message: the line of its first lone CR
        at = raw.find(b"\r")
        end = raw.find(b"\n", at)
        line = raw[raw.rfind(b"\n", 0, at) + 1: end if end >= 0 else len(raw)]
        return f"line {raw.count(NEWLINE, 0, at) + 1}: {_excerpt(line)}"
    for number, line in enumerate(raw.split(b"\r\n"), 1):
        if b"\r" in line or b"\n" in line:
            return f"line {number}: {_excerpt(line)}"
    return ""


def _header_lines(head: bytes, limits: Limits,
                  utf8: bool = False) -> Generator[Finding, None, tuple[list[bytes], bool]]:
    """Walk the header block; yields findings and returns (field names, usable).

    utf8: the message was accepted with SMTPUTF8 (RFC 6532), so raw UTF-8 in headers is
    allowed; other 8-bit bytes are still reported."""
    # Written by hand on purpose, not left to the email package: its parser repairs what this
    # must report (over-long lines, unencoded 8-bit, fields without a colon) and would give no
    # line numbers as evidence; and this byte scan is the validation fast path measured in
    # benchmarks/ (validation per core), most messages need nothing more.
    names = clean_field_names(head, MAX_LINE)
    if names is not None:  # nothing for the walk below to find but too many fields
        if len(names) > limits.max_headers:
            yield Finding("header.too-many", f"{len(names)} fields > {limits.max_headers}")
            return names, False
        return names, True
    return (yield from _walk_header_lines(head, limits, utf8))


def _walk_header_lines(head: bytes, limits: Limits,
                       utf8: bool = False) -> Generator[Finding, None, tuple[list[bytes], bool]]:
    """_header_lines line by line, with the evidence of each finding."""
    names: list[bytes] = []
    usable = True
    non_ascii_reported = False
    lines = head.splitlines()
    first = 1
    if lines and lines[0].startswith(b"From "):
        # An mbox separator: no header field, yet it would be sent as the message's first line
        # (a relay takes the whole header for body). Reported, then the fields after it checked.
        yield Finding("header.malformed", f"line 1: an mbox 'From ' line (mbox files: enqueue --mbox): "
                                          f"{_excerpt(lines[0])}")
        lines, first = lines[1:], 2
    for number, line in enumerate(lines, first):
        if len(line) > MAX_LINE:
            yield Finding("header.line-too-long", f"line {number}: {len(line)} octets: {_excerpt(line)}")
        if not non_ascii_reported and not line.isascii() and not (utf8 and _is_utf8(line)):
            non_ascii_reported = True
            yield Finding("header.non-ascii-unencoded", f"line {number}: {_excerpt(line)}")
        if line[:1] in (b" ", b"\t"):
            if not names:
                usable = False
                yield Finding("header.malformed", f"line {number}: continuation before any field")
            continue
        name, colon, _value = line.partition(b":")
        if not colon or not _FIELD_NAME.match(name.rstrip(b" \t")):
            usable = False
            yield Finding("header.malformed", f"line {number}: {_excerpt(line)}")
            continue
        names.append(name.rstrip(b" \t").lower())
    if len(names) > limits.max_headers:
        usable = False
        yield Finding("header.too-many", f"{len(names)} fields > {limits.max_headers}")
    return names, usable


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _mime(message: Message, limits: Limits) -> Iterator[Finding]:
    parts = 0
    deepest = 0
    nested_reported = False
    # Each part with its depth and the boundaries of the multiparts that enclose it.
    stack: list[tuple[Message, int, tuple[str, ...]]] = [(message, 1, ())]
    while stack:
        part, depth, enclosing = stack.pop()
        parts += 1
        deepest = max(deepest, depth)
        if depth > limits.max_mime_depth:
            yield Finding("mime.nesting-too-deep", f"depth > {limits.max_mime_depth}")
            return
        if parts > limits.max_mime_parts:
            yield Finding("mime.too-many-parts", f"more than {limits.max_mime_parts} parts")
            return
        for defect in part.defects:
            if isinstance(defect, NoBoundaryInMultipartDefect):
                yield Finding("mime.missing-boundary", f"part {parts}: {part.get_content_type()}")
            elif isinstance(defect, StartBoundaryNotFoundDefect | CloseBoundaryNotFoundDefect):
                yield Finding("mime.boundary-not-found", f"part {parts}: {type(defect).__name__}")
        boundary = part.get_boundary() if part.get_content_maintype() == "multipart" else None
        if boundary is not None and enclosing and not nested_reported:
            # RFC 2046 5.1.1: an inner boundary that equals or begins with an outer one lets
            # parsers disagree about where parts end (a way to hide content from scanners).
            # An equal one even stops this parser from splitting the inner part.
            clash = next((outer for outer in enclosing if boundary.startswith(outer)), None)
            if clash is not None:
                nested_reported = True
                yield Finding("mime.boundary-nested", _excerpt(f"part {parts}: {boundary!r} inside {clash!r}"))
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            inner = (*enclosing, boundary) if boundary else enclosing
            stack.extend((child, depth + 1, inner) for child in payload if isinstance(child, Message))


# The workers' address rule and the address fields' parsers live in drain.addressrule (the names
# above stay here for callers).
_strict_parse_failure = strict_parse_failure
_valid_cached = valid_cached


def _valid(address: str, limits: Limits) -> bool:
    return valid_cached(address, limits.allow_special_domains, limits.check_dns)


def _addresses(message: Message, envelope: Envelope, limits: Limits) -> Iterator[Finding]:
    # The strict (default policy) header parser reads every address field; its own
    # failures on odd real-world headers surface as parse.crash through check().
    # The fields by name in one pass over the header (what get_all gives, in order:
    # get_all of each name was a pass of its own).
    # Only the address fields go through the policy's fetch (what items() does to every field).
    fields: dict[str, list[Any]] = {}
    fetch = message.policy.header_fetch_parse
    for key, value in message.raw_items():
        name = key.lower()
        if name in _ADDRESS_NAMES:
            fields.setdefault(name, []).append(fetch(key, value))
    for name in ADDRESS_FIELDS:
        for value in fields.get(name.lower(), ()):
            text = header_text(value).replace("\r", "").replace("\n", "")
            failure = None if plain_address_field(text) else strict_parse_failure(name, text)
            if failure is not None and encoded_newline(text):
                yield Finding("header.encoded-newline", f"{name}: {_excerpt(text)}")
            elif isinstance(failure, RecursionError):  # not a MIME structure: check() would say so
                raise ValueError(f"{name}: comments or groups nested too deep for the header parser")
            elif failure is not None:
                raise failure
    froms = fields.get("from", [])
    header_from = mailboxes(tuple(header_text(v) for v in froms))
    bad_from = [a for a in header_from if not _valid(a, limits)]
    if froms and (not header_from or bad_from):
        yield Finding("address.invalid-sender", f"From: {_excerpt(', '.join(bad_from) or str(message['From']))}")
    elif envelope.sender and not _valid(envelope.sender, limits):
        yield Finding("address.invalid-sender", f"MAIL FROM: {_excerpt(envelope.sender)}")
    if not envelope.recipients:
        yield Finding("address.no-recipient")
        return
    bad = [r for r in envelope.recipients if not _valid(r, limits)]
    if bad:
        yield Finding("address.invalid-recipient", _excerpt(", ".join(bad)))
