"""The MIME tree of a message for validation, parsed from as few of its lines as gives the same tree."""

from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32


def structure(raw: bytes, bare_cr: bool = True) -> Message:
    """The message as the email package parses it, for the MIME and address checks.

    When it can, this parses a skeleton of the message instead of all of it: the header
    block, and each line starting with "--" (a boundary, or not) with the lines after it up
    to the first empty line (a part's header block). The lines left out are body lines of
    leaf parts, preambles and epilogues, which the parser only tests against the enclosing
    boundaries; without them the parts, their headers, nesting and boundary defects come
    out the same, and a base64 attachment is not walked line by line in Python.
    The whole message is parsed instead when a lone CR may end lines (the parser splits on
    it) or when a header names a message/* type or a digest (their bodies hold headers)."""
    if not bare_cr:
        skeleton = _skeleton(raw)
        if _WHOLE_NEEDED.search(skeleton) is None:
            return BytesParser(policy=compat32).parsebytes(skeleton)
    return BytesParser(policy=compat32).parsebytes(raw)


_WHOLE_NEEDED = re.compile(rb"message/|digest", re.IGNORECASE)


def _through_blank_line(raw: bytes, start: int) -> int:
    """The end of the first empty line at or after line start `start` (len(raw) if none)."""
    if raw.startswith(b"\n", start):
        return start + 1
    if raw.startswith(b"\r\n", start):
        return start + 2
    ends = [i + n for i, n in ((raw.find(b"\n\n", start), 2), (raw.find(b"\n\r\n", start), 3)) if i >= 0]
    return min(ends) if ends else len(raw)


def _skeleton(raw: bytes) -> bytes:
    """See structure(): the lines of `raw` (no lone CR in it) that shape its MIME tree."""
    pos = _through_blank_line(raw, 0)
    kept = [raw[:pos]]
    while pos < len(raw):
        hit = raw.find(b"\n--", pos - 1)
        if hit < 0:
            break
        end = _through_blank_line(raw, hit + 1)
        kept.append(raw[hit + 1:end])
        pos = end
    return b"".join(kept)
