"""The MIME tree of a message skeleton (drain.mimeskeleton), built the way the email package's
feedparser builds it, in one plain walk over the skeleton's lines.

The feedparser (compat32) is a generator per part that takes the input a line at a time
through a buffered file with a stack of end-of-part tests; for the few lines of a skeleton
that machinery is most of the cost of validating a message (~25 µs of 50 for a 2 KB one,
~70 µs for a multipart one). `walk` follows the same steps on a list of the same lines: the
same header lines go to the same `set_raw` calls (through the same policy), the same
boundary patterns end the same parts, and the same defects are noted where the checks look
for them (missing boundary, start or close boundary not found). Header semantics (content
type, boundary parameter, defaults) are the Message class's own, called as the parser calls them.

What it leaves out, because no check reads it: the text of leaf payloads, preambles and
epilogues (a skeleton holds only some of their lines anyway). Where the parser would do more
than split parts (a message/* part, a digest, a nesting deeper than MAX_DEPTH) or gives a
line back where a list index cannot (a "From " line last in a header block), `walk` returns
None and the caller parses the skeleton with the email package as before.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from email import errors, feedparser
from email.message import Message
from email.policy import compat32
from functools import lru_cache

# Deeper than this, the parser's own recursion decides (it may run out of stack, which the
# checks report as too deep: the walk must not answer differently).
MAX_DEPTH = 20

_EOF = ""
# The parser's own patterns (not in its typed interface): a header or continuation line, a
# line ending at the start of a line, and at its end.
headerRE: re.Pattern[str] = getattr(feedparser, "headerRE")  # noqa: B009
NLCRE: re.Pattern[str] = getattr(feedparser, "NLCRE")  # noqa: B009
NLCRE_eol: re.Pattern[str] = getattr(feedparser, "NLCRE_eol")  # noqa: B009


class _Unsupported(Exception):
    """Something only the email package's parser does (message/* bodies): parse it there."""


@lru_cache(maxsize=64)
def _boundary_match(boundary: str) -> Callable[[str], re.Match[str] | None]:
    """The feedparser's test for a boundary line of this boundary (a separator or the close)."""
    separator = "--" + boundary
    return re.compile("(?P<sep>" + re.escape(separator) + r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$").match


class _Walk:
    def __init__(self, lines: list[str], factory: Callable[..., Message]) -> None:
        self.lines = lines
        self.pos = 0
        self.eofstack: list[Callable[[str], re.Match[str] | None]] = []
        self.factory = factory
        self.stack: list[Message] = []

    def readline(self) -> str:
        if self.pos >= len(self.lines):
            return _EOF
        line = self.lines[self.pos]
        for ateof in reversed(self.eofstack):
            if ateof(line):
                return _EOF  # the line stays next
        self.pos += 1
        return line

    def unreadline(self, line: str) -> None:
        # The parser gives back an end of input too (after repeated boundary lines), as an
        # empty line read next: the next read here ends the same way (the same line is next,
        # and the end-of-part tests that matched it are still there), so it is not kept.
        if line != _EOF:
            self.pos -= 1

    def part(self) -> Message:
        """One part from the current line on (the feedparser's _parsegen)."""
        if len(self.stack) >= MAX_DEPTH:
            raise _Unsupported
        msg = self.factory(policy=compat32)
        if self.stack:
            parent = self.stack[-1]
            if parent.get_content_type() == "multipart/digest":
                raise _Unsupported
            parent.attach(msg)
        self.stack.append(msg)
        try:
            self._part(msg)
        finally:
            self.stack.pop()
        return msg

    def _part(self, msg: Message) -> None:
        headers: list[str] = []
        while (line := self.readline()) != _EOF:
            if not headerRE.match(line):
                if not NLCRE.match(line):
                    msg.defects.append(errors.MissingHeaderBodySeparatorDefect())
                    self.unreadline(line)
                break
            headers.append(line)
        self._headers(msg, headers)
        if msg.get_content_maintype() == "message":
            raise _Unsupported
        if msg.get_content_maintype() == "multipart":
            self._multipart(msg)
            return
        while self.readline() != _EOF:
            pass
        msg.set_payload("")

    def _multipart(self, msg: Message) -> None:
        boundary = msg.get_boundary()
        if boundary is None:
            msg.defects.append(errors.NoBoundaryInMultipartDefect())
            while self.readline() != _EOF:
                pass
            msg.set_payload("")
            return
        if str(msg.get("content-transfer-encoding", "8bit")).lower() not in ("7bit", "8bit", "binary"):
            msg.defects.append(errors.InvalidMultipartContentTransferEncodingDefect())
        match = _boundary_match(boundary)
        capturing_preamble = True
        close_boundary_seen = False
        while (line := self.readline()) != _EOF:
            mo = match(line)
            if not mo:
                continue  # preamble (the parser asserts it is)
            if mo.group("end"):
                close_boundary_seen = True
                break
            if capturing_preamble:
                capturing_preamble = False
                self.unreadline(line)
                continue
            while True:  # repeated boundary lines make no parts
                line = self.readline()
                if not match(line):
                    self.unreadline(line)
                    break
            self.eofstack.append(match)
            try:
                self.part()
            finally:
                self.eofstack.pop()
        if capturing_preamble:
            msg.defects.append(errors.StartBoundaryNotFoundDefect())
            msg.set_payload("")
            while self.readline() != _EOF:
                pass
            return
        if not close_boundary_seen:
            msg.defects.append(errors.CloseBoundaryNotFoundDefect())
            return
        while self.readline() != _EOF:  # the epilogue
            pass

    def _headers(self, msg: Message, lines: list[str]) -> None:
        """The feedparser's _parse_headers, line for line."""
        lastheader = ""
        lastvalue: list[str] = []
        for lineno, line in enumerate(lines):
            if line[0] in " \t":
                if not lastheader:
                    msg.defects.append(errors.FirstHeaderLineIsContinuationDefect(line))
                    continue
                lastvalue.append(line)
                continue
            if lastheader:
                msg.set_raw(*compat32.header_source_parse(lastvalue))
                lastheader, lastvalue = "", []
            if line.startswith("From "):
                if lineno == 0:
                    mo = NLCRE_eol.search(line)
                    msg.set_unixfrom(line[:-len(mo.group(0))] if mo else line)
                    continue
                if lineno == len(lines) - 1:
                    # The parser gives it back in front of the line after the header block
                    # (a blank line it has dropped): not a step a list index can repeat.
                    raise _Unsupported
                msg.defects.append(errors.MisplacedEnvelopeHeaderDefect(line))
                continue
            i = line.find(":")
            if i == 0:
                msg.defects.append(errors.InvalidHeaderDefect("Missing header name."))
                continue
            lastheader = line[:i]
            lastvalue = [line]
        if lastheader:
            msg.set_raw(*compat32.header_source_parse(lastvalue))


def walk(skeleton: bytes, factory: Callable[..., Message] = Message) -> Message | None:
    """The tree the email package's BytesParser (compat32) gives for `skeleton`, with the
    same parts, headers and MIME defects; None where only the parser itself can tell."""
    text = skeleton.decode("ascii", "surrogateescape")
    # The parser's lines: ended by CRLF, CR or LF (StringIO with newline="" splits as it does).
    walker = _Walk(io.StringIO(text, newline="").readlines(), factory)
    try:
        root = walker.part()
    except _Unsupported:
        return None
    if root.get_content_maintype() == "multipart" and not root.is_multipart():
        root.defects.append(errors.MultipartInvariantViolationDefect())
    return root
