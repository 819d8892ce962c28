"""Message bodies as Redis holds them: large ones compressed with zstd (level 1).

Stored forms of the `raw` field of a message hash:
- the message bytes as they are (small mail, and mail that does not compress);
- MARK + a zstd frame (with its content size), for a body of COMPRESS_ABOVE bytes or more
  that shrinks to at most KEEP_RATIO of its size (a body of PROBE_ABOVE bytes or more is
  compressed only when a sample of it shrinks to PROBE_RATIO: see `worth_compressing`);
- ZLIB_MARK + a zlib stream: what drain stored before it used zstd (still read);
- ESCAPE + the message bytes, for the rare message that itself begins with the two bytes
  every mark starts with, so that no message is ever mistaken for a compressed one.

Mail stored before compression existed reads back unchanged (it has no mark). zstd level 1
shrinks text and HTML mail as much as zlib level 1 did (benchmarks/body-size.md) for about
a third of the producer's CPU: 3.7 against 9.5 µs for a 2 KB text message, 13 against 25 µs
for 20 KB of HTML, and reads back faster too (benchmarks/enqueue-speed-2026-11-30.md).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence

import zstandard
from redis.typing import EncodableT, FieldT

COMPRESS_ABOVE = 1024
KEEP_RATIO = 0.9
LEVEL = 1
_PREFIX = b"\x00\xdc"
MARK = _PREFIX + b"s"
ZLIB_MARK = _PREFIX + b"z"
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


class _Codecs(threading.local):
    """A zstd compressor and decompressor per thread (one may not serve two threads at once)."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=LEVEL)
        self.decompressor = zstandard.ZstdDecompressor()


_codecs = _Codecs()


def worth_compressing(raw: bytes) -> bool:
    """Whether a large body would shrink enough to pay for compressing it.

    Mail that is mostly a base64 attachment (already compressed data: 6 bits in each byte)
    shrinks only to ~77 % under zlib level 1 and costs it ~25 µs per KB on this machine,
    about 2.4 ms for a 100 KB message at enqueue and ~0.5 ms more to inflate at each delivery
    (benchmarks/enqueue-2026-11-30.md). PROBE_SLICES slices of PROBE_SLICE bytes spread over
    the body are compressed as one 2 KB sample (tens of µs at most); the sample sorts mail
    as the whole would (measured: HTML and text 18-27 % for 5-16 % whole, base64 78 % for
    77 %, half HTML half attachment 55 % for 45 %; zstd level 1 gives the sample the same
    ratios within 1 %, and still ~76 % for the whole base64 at ~1.4 µs per KB, which the
    delivery would pay again to read it back). Below PROBE_ABOVE the whole is tried.
    """
    if len(raw) < PROBE_ABOVE:
        return True
    step = len(raw) // PROBE_SLICES
    sample = b"".join(raw[i * step:i * step + PROBE_SLICE] for i in range(PROBE_SLICES))
    return len(_codecs.compressor.compress(sample)) <= PROBE_RATIO * len(sample)


def pack(raw: bytes) -> bytes:
    """The form to store for a message's bytes."""
    if len(raw) >= COMPRESS_ABOVE and worth_compressing(raw):
        packed = MARK + _codecs.compressor.compress(raw)
        if len(packed) <= KEEP_RATIO * len(raw):
            return packed
    return ESCAPE + raw if raw.startswith(_PREFIX) else raw


def pack_many(raws: Sequence[bytes]) -> list[bytes]:
    """The forms to store for many messages' bytes, each as `pack` gives it. The bodies to
    compress go to zstd in one call, which holds no GIL while it works: run from a helper
    thread, the producer's Python goes on meanwhile (Enqueue compresses a chunk this way)."""
    many = getattr(_codecs.compressor, "multi_compress_to_buffer", None)  # the C backend's
    if many is None:
        return [pack(raw) for raw in raws]
    stored = [ESCAPE + raw if raw.startswith(_PREFIX) else raw for raw in raws]
    picked = [k for k, raw in enumerate(raws) if len(raw) >= COMPRESS_ABOVE and worth_compressing(raw)]
    if picked:
        for k, frame in zip(picked, many([raws[k] for k in picked]), strict=True):
            if len(frame) + len(MARK) <= KEEP_RATIO * len(raws[k]):
                stored[k] = MARK + frame
    return stored


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
    if stored.startswith(MARK):
        return _unzstd(stored[len(MARK):], limit)
    if not stored.startswith(ZLIB_MARK):
        raise BodyError("field raw has an unknown stored form")
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(stored[len(ZLIB_MARK):], limit + 1)
    except zlib.error as exc:
        raise BodyError(f"field raw does not decompress: {exc}") from None
    if len(raw) > limit:
        raise BodyError(f"field raw decompresses to more than {limit} bytes")
    if not inflate.eof:
        raise BodyError("field raw is a truncated compressed stream")
    return raw


def _unzstd(frame: bytes, limit: int) -> bytes:
    """A zstd frame's content, no more than `limit` bytes: the size its header gives is
    checked before anything is allocated (pack always writes it)."""
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise BodyError(f"field raw is not a zstd frame: {exc}") from None
    if size < 0:
        raise BodyError("field raw is a zstd frame without its content size")
    if size > limit:
        raise BodyError(f"field raw decompresses to more than {limit} bytes")
    try:
        raw = _codecs.decompressor.decompress(frame, max_output_size=max(size, 1))
    except zstandard.ZstdError as exc:
        raise BodyError(f"field raw does not decompress: {exc}") from None
    if len(raw) != size:
        raise BodyError("field raw is a truncated compressed stream")
    return raw


def shown(stored: bytes) -> bytes:
    """The message's bytes for display and export: the stored bytes themselves when they
    cannot be decompressed (what there is, rather than nothing)."""
    try:
        return unpack(stored)
    except BodyError:
        return stored
