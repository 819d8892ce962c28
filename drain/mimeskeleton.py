"""The MIME tree of a message for validation, parsed from as few of its lines as gives the same tree."""

from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from typing import Any

from drain.linescan import Endings, find_line_prefix
from drain.mimetree import walk


def structure(raw: bytes, bare_cr: bool = True, kind: Endings = "mixed") -> Message:
    """The message as the email package parses it, for the MIME and address checks.

    When it can, this parses a skeleton of the message instead of all of it: the header
    block, and each line starting with "--" (a boundary, or not) with the lines after it up
    to the first empty line (a part's header block). The lines left out are body lines of
    leaf parts, preambles and epilogues, which the parser only tests against the enclosing
    boundaries; without them the parts, their headers, nesting and boundary defects come
    out the same, and a base64 attachment is not walked line by line in Python.
    The whole message is parsed instead when a lone CR may end lines (the parser splits on
    it) or when a header names a message/* type or a digest (their bodies hold headers).
    kind: how the lines end (drain.linescan.endings), when known: an LF-only message has no
    CRLF blank line to look for, a CRLF one no LF LF."""
    if not bare_cr:
        skeleton = _skeleton(raw, kind)
        if _WHOLE_NEEDED.search(skeleton) is None:
            tree = walk(skeleton, _Part)  # the parser's tree, without its line machinery
            return tree if tree is not None else BytesParser(_Part, policy=compat32).parsebytes(skeleton)
    return BytesParser(_Part, policy=compat32).parsebytes(raw)


_UNSET = object()  # the boundary not worked out yet
_NONE = object()  # worked out: the part has none


class _Part(Message):
    """A compat32 Message that works its content type out once, not at each of the dozen
    times the parser and the checks ask for it (each a scan of the part's headers: about a
    third of the parse), and its boundary once (the tree walk and the MIME checks both ask;
    a parameter parse, ~10 % of validating a multipart message). Every way a header or the
    default type can change forgets both."""

    _content_type: str | None = None
    _boundary: object = _UNSET

    def get_content_type(self) -> str:
        if self._content_type is None:
            self._content_type = super().get_content_type()
        return self._content_type

    def get_boundary(self, failobj: Any = None) -> Any:
        if self._boundary is _UNSET:
            self._boundary = super().get_boundary(_NONE)
        return failobj if self._boundary is _NONE else self._boundary

    def set_raw(self, name: str, value: str) -> None:  # the parser's way in: written out, called most
        self._content_type = None
        self._boundary = _UNSET
        super().set_raw(name, value)


def _forgetting(name: str) -> object:
    change = getattr(Message, name)

    def method(self: _Part, *args: object, **kwargs: object) -> object:
        self._content_type = None
        self._boundary = _UNSET
        return change(self, *args, **kwargs)
    method.__name__ = method.__qualname__ = name
    return method


for _name in ("__setitem__", "__delitem__", "add_header", "replace_header", "set_default_type",
              "set_param", "del_param", "set_type", "set_boundary"):
    setattr(_Part, _name, _forgetting(_name))


_WHOLE_NEEDED = re.compile(rb"message/|digest", re.IGNORECASE)


class _BlankLines:
    """Finds the end of the first empty line at or after a line start. Each pattern's next
    occurrence is remembered, so the scans over one message stay linear (a CRLF message
    has no LF LF at all, and looking for one again from every part would be quadratic)."""

    def __init__(self, raw: bytes, kind: Endings = "mixed") -> None:
        self.raw = raw
        # -2: not searched yet; -1: none left (a pattern the line endings rule out is not
        # searched for at all: each search of a large body costs near 1 µs per KB).
        self.next = {b"\n\n": -1 if kind == "crlf" else -2, b"\n\r\n": -1 if kind == "lf" else -2}

    def end_after(self, start: int) -> int:
        raw = self.raw
        if raw.startswith(b"\n", start):
            return start + 1
        if raw.startswith(b"\r\n", start):
            return start + 2
        best = len(raw)
        for pattern, at in self.next.items():
            if -1 < at < start or at == -2:
                at = self.next[pattern] = raw.find(pattern, start)
            if at >= 0:
                best = min(best, at + len(pattern))
        return best


def _skeleton(raw: bytes, kind: Endings = "mixed") -> bytes:
    """See structure(): the lines of `raw` (no lone CR in it) that shape its MIME tree."""
    blank = _BlankLines(raw, kind)
    pos = blank.end_after(0)
    kept = [raw[:pos]]
    while pos < len(raw):
        hit = find_line_prefix(raw, b"--", pos - 1)
        if hit < 0:
            break
        end = blank.end_after(hit + 1)
        kept.append(raw[hit + 1:end])
        pos = end
    return b"".join(kept)
