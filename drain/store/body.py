"""Message bodies as Redis holds them: large ones compressed with zlib (level 1).

Stored forms of the `raw` field of a message hash:
- the message bytes as they are (small mail, and mail that does not compress);
- MARK + a zlib stream, for a body of COMPRESS_ABOVE bytes or more that shrinks to at most
  KEEP_RATIO of its size;
- ESCAPE + the message bytes, for the rare message that itself begins with the two bytes
  both marks start with, so that no message is ever mistaken for a compressed one.

Mail stored before compression existed reads back unchanged (it has no mark). zlib level 1
by benchmarks/body-size.md: about half the size of text and HTML mail for tens of
microseconds per message; decompression is a few microseconds per KB.
"""

from __future__ import annotations

import zlib

from redis.typing import EncodableT, FieldT

COMPRESS_ABOVE = 1024
KEEP_RATIO = 0.9
LEVEL = 1
_PREFIX = b"\x00\xdc"
MARK = _PREFIX + b"z"
ESCAPE = _PREFIX + b"="
# Most bytes a stored body may inflate to: a damaged or hostile stream stops here.
MAX_BODY = 64 * 1024 * 1024


class BodyError(ValueError):
    """A stored body that cannot be read back (a damaged compressed stream)."""


def pack(raw: bytes) -> bytes:
    """The form to store for a message's bytes."""
    if len(raw) >= COMPRESS_ABOVE:
        packed = MARK + zlib.compress(raw, LEVEL)
        if len(packed) <= KEEP_RATIO * len(raw):
            return packed
    return ESCAPE + raw if raw.startswith(_PREFIX) else raw


def fields(raw: bytes) -> dict[FieldT, EncodableT]:
    """The hash fields for a message's bytes: `raw` as stored, and `sz`, the message's own
    size, when it is stored compressed (HSTRLEN raw gives it otherwise)."""
    stored = pack(raw)
    return {"raw": stored, "sz": len(raw)} if stored.startswith(MARK) else {"raw": stored}


def unpack(stored: bytes, limit: int = MAX_BODY) -> bytes:
    """The message's bytes from their stored form; BodyError if they cannot be had."""
    if not stored.startswith(_PREFIX):
        return stored
    if stored.startswith(ESCAPE):
        return stored[len(ESCAPE):]
    if not stored.startswith(MARK):
        raise BodyError("field raw has an unknown stored form")
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(stored[len(MARK):], limit + 1)
    except zlib.error as exc:
        raise BodyError(f"field raw does not decompress: {exc}") from None
    if len(raw) > limit:
        raise BodyError(f"field raw decompresses to more than {limit} bytes")
    if not inflate.eof:
        raise BodyError("field raw is a truncated compressed stream")
    return raw


def shown(stored: bytes) -> bytes:
    """The message's bytes for display and export: the stored bytes themselves when they
    cannot be decompressed (what there is, rather than nothing)."""
    try:
        return unpack(stored)
    except BodyError:
        return stored
