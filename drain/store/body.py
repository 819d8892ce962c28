"""Message bodies as Redis holds them: large ones compressed with zlib (level 1).

Stored forms of the `raw` field of a message hash:
- the message bytes as they are (small mail, and mail that does not compress);
- MARK + a zlib stream, for a body of COMPRESS_ABOVE bytes or more that shrinks to at most
  KEEP_RATIO of its size (a body of PROBE_ABOVE bytes or more is compressed only when a
  sample of it shrinks to PROBE_RATIO: see `worth_compressing`);
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
# Bodies this large are probed before they are compressed whole (see worth_compressing).
# From 32 KB: below, the probe (~8 µs) would add a quarter to the cost of compressing a 20 KB
# HTML mail, and a small attachment costs little to compress.
PROBE_ABOVE = 32 * 1024
PROBE_SLICES = 8
PROBE_SLICE = 256
PROBE_RATIO = 0.7
# Most bytes a stored body may inflate to: a damaged or hostile stream stops here.
MAX_BODY = 64 * 1024 * 1024


class BodyError(ValueError):
    """A stored body that cannot be read back (a damaged compressed stream)."""


def worth_compressing(raw: bytes) -> bool:
    """Whether a large body would shrink enough to pay for compressing it.

    Mail that is mostly a base64 attachment (already compressed data: 6 bits in each byte)
    shrinks only to ~77 % under zlib level 1 and costs it ~25 µs per KB on this machine,
    about 2.4 ms for a 100 KB message at enqueue and ~0.5 ms more to inflate at each delivery
    (benchmarks/enqueue-2026-11-30.md). PROBE_SLICES slices of PROBE_SLICE bytes spread over
    the body are compressed as one 2 KB sample (tens of µs at most); the sample sorts mail
    as the whole would (measured: HTML and text 18-27 % for 5-16 % whole, base64 78 % for
    77 %, half HTML half attachment 55 % for 45 %). Below PROBE_ABOVE the whole is tried.
    """
    if len(raw) < PROBE_ABOVE:
        return True
    step = len(raw) // PROBE_SLICES
    sample = b"".join(raw[i * step:i * step + PROBE_SLICE] for i in range(PROBE_SLICES))
    return len(zlib.compress(sample, LEVEL)) <= PROBE_RATIO * len(sample)


def pack(raw: bytes) -> bytes:
    """The form to store for a message's bytes."""
    if len(raw) >= COMPRESS_ABOVE and worth_compressing(raw):
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
