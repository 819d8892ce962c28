"""Scans over a message's lines at C speed: how its lines end, where a line starts with a
given prefix, whether any line is over a length.

Searching bytes for one byte is memchr (about 1 µs for 100 KB here); searching for two or
more bytes (b"\\r\\n", b"\\n--") is CPython's general search, near 1 µs per KB, and
bytes.count of a two-byte pattern the same (benchmarks/bytes-2026-11-30.md). So these scans
look for single bytes first and fall back to a longer search only where that is cheaper. For
LF + prefix that search is the regex engine's literal search, about a third of bytes.find's
time on mail (0.3 against 0.85 µs per KB on HTML, base64 and random bytes here) and never
far behind it (nothing but CRLF lines: 0.85 against 0.65).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

Endings = Literal["lf", "crlf", "mixed"]
# After this many occurrences of a prefix's first byte that do not start a line, the search
# for a line prefix gives up on memchr and searches for newline + prefix instead.
_FALSE_HITS = 16
# Shorter than this, the general search is used at once.
_SHORT = 4096

_last: tuple[bytes, Endings] = (b"", "lf")
# A CR not followed by LF, and an LF not after a CR: each pattern starts with a literal byte,
# so the regex engine jumps from one CR (or LF) to the next in C and tests a neighbour there.
# Two such searches prove a message CRLF-clean in ~0.8 µs per KB where the three counts
# (CR, LF, and the two-byte CRLF, the slow one) took ~1.5 (benchmarks/cpu-size-2026-11-30.md).
_LONE_CR = re.compile(rb"\r(?!\n)")
_BARE_LF = re.compile(rb"\n(?<!\r\n)")


def endings(raw: bytes) -> Endings:
    """How the lines of `raw` end: "lf" when it holds no CR at all (LF-only, or one line),
    "crlf" when every CR is followed by an LF and every LF follows a CR, else "mixed" (a
    lone CR or a bare LF somewhere).

    The answer for the last message asked about is remembered (by identity: the bytes are
    held, so the object cannot be another one): validation and the wire form ask about the
    same bytes one after the other."""
    global _last
    last = _last
    if last[0] is raw:
        return last[1]
    if b"\r" not in raw:
        kind: Endings = "lf"
    elif _LONE_CR.search(raw) is None and _BARE_LF.search(raw) is None:
        kind = "crlf"  # every CR is followed by an LF and every LF follows a CR
    else:
        kind = "mixed"
    if type(raw) is bytes:  # immutable: the answer stays true while the object lives
        _last = (raw, kind)
    return kind


def find_line_prefix(raw: bytes, prefix: bytes, start: int = 0) -> int:
    """Where b"\\n" + prefix first occurs in raw at or after `start` (the index of the LF),
    or -1: raw.find(b"\\n" + prefix, start), found by memchr on the prefix's first byte
    while that byte is rare, by a search for LF + prefix once it turns out common."""
    if len(raw) - start < _SHORT:  # a few KB: one search for LF + prefix costs less than the loop
        return _search(b"\n" + prefix, raw, start)
    first = prefix[:1]
    misses = 0
    at = raw.find(first, start + 1)
    while at >= 0:
        if raw[at - 1] == 10 and raw.startswith(prefix, at):
            return at - 1
        misses += 1
        if misses > _FALSE_HITS:
            return _search(b"\n" + prefix, raw, at)
        at = raw.find(first, at + 1)
    return -1


@lru_cache(maxsize=16)
def _literal(needle: bytes) -> re.Pattern[bytes]:
    return re.compile(re.escape(needle))


def _search(needle: bytes, raw: bytes, start: int) -> int:
    """raw.find(needle, start), by the regex engine (see the module's note)."""
    if start < 0:  # counted from the end, as bytes.find counts it (no caller does)
        return raw.find(needle, start)
    found = _literal(needle).search(raw, start)
    return found.start() if found else -1


def lines_within(raw: bytes, start: int, most: int) -> bool:
    """True when no line of raw[start:] is longer than `most` bytes (its LF not counted);
    False when one may be (the caller then measures them exactly).

    From each line start the farthest LF within most + 1 bytes is taken (memrchr): every
    line up to it is short enough, and the walk goes on after it, so a 100 KB body takes
    about a hundred short steps instead of a split into lines."""
    last = len(raw) - most  # a line starting here or later is short enough
    at = start
    rfind = raw.rfind
    window = most + 1
    while at < last:
        newline = rfind(b"\n", at, at + window)
        if newline < 0:
            return False
        at = newline + 1
    return True


# A header block of field lines only (a name, maybe blanks, a colon) and their folds, ended by
# CRLF, LF or a lone CR as bytes.splitlines ends them.
_FIELD = rb"[\x21-\x39\x3b-\x7e]+[ \t]*:"
_CLEAN_HEAD = re.compile(rb"%s[^\r\n]*(?:(?:\r\n|\r|\n)(?:%s|[ \t])[^\r\n]*)*(?:\r\n|\r|\n)?" % (_FIELD, _FIELD))
_FIELD_NAME_AT_LINE_START = re.compile(rb"(?:\A|(?<=[\r\n]))([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def clean_field_names(head: bytes, most: int) -> list[bytes] | None:
    """The lowercased field names of a header block that is ASCII, has no line over `most`
    bytes, no mbox "From " line and nothing but field lines and their folds (the first line
    a field), each name followed by a colon (blanks before it allowed): two regex passes in
    C. None for any other block (the caller walks its lines to say what is wrong)."""
    if not head.isascii() or head.startswith(b"From ") or _CLEAN_HEAD.fullmatch(head) is None:
        return None
    if not lines_within(head, 0, most):
        return None
    return [name.lower() for name in _FIELD_NAME_AT_LINE_START.findall(head)]
