"""drain.linescan gives what the plain (slower) scans give, on any bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drain.linescan import endings, find_line_prefix, lines_within

_PIECES = st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"-", b"--", b"\n.", b"\n--", b"a", b"x" * 37, b"y" * 500])


def _bytes(pieces: list[bytes], repeat: int) -> bytes:
    return b"".join(pieces) * repeat


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=40), st.integers(1, 300), st.sampled_from([b".", b"--"]), st.integers(0, 50))
def test_find_line_prefix_is_find(pieces: list[bytes], repeat: int, prefix: bytes, start: int) -> None:
    raw = _bytes(pieces, repeat)
    start = min(start, len(raw))
    assert find_line_prefix(raw, prefix, start) == raw.find(b"\n" + prefix, start)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=40), st.integers(1, 60), st.integers(0, 30), st.sampled_from([10, 100, 998]))
def test_lines_within_never_misses_a_long_line(pieces: list[bytes], repeat: int, start: int, most: int) -> None:
    raw = _bytes(pieces, repeat)
    start = min(start, len(raw))
    longest = max(map(len, raw[start:].split(b"\n")))
    if lines_within(raw, start, most):
        assert longest <= most
    if longest <= most // 2:  # lines well inside the limit are always found so
        assert lines_within(raw, start, most)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=40), st.integers(1, 3))
def test_endings_agree_with_counting(pieces: list[bytes], repeat: int) -> None:
    raw = bytes(bytearray(_bytes(pieces, repeat)))  # a new object: not the remembered one
    crlf, cr, lf = raw.count(b"\r\n"), raw.count(b"\r"), raw.count(b"\n")
    expected = "lf" if cr == 0 else "crlf" if cr == crlf == lf else "mixed"
    assert endings(raw) == expected
    assert endings(raw) == expected  # asked again: the remembered answer


def test_lines_within_at_the_limit() -> None:
    for most in (10, 998):
        for n in range(most - 2, most + 3):
            line = b"a" * n
            for raw in (b"h\n" + line + b"\nend\n", b"h\n" + line, b"h\nbbb\n" + line + b"\n"):
                assert lines_within(raw, 2, most) == (n <= most), (most, n, raw[:20])


def test_endings_of_a_changed_bytearray_are_not_remembered() -> None:
    buffer = bytearray(b"a\r\nb\r\n")
    assert endings(buffer) == "crlf"  # type: ignore[arg-type]
    buffer[:] = b"a\nb\n"
    assert endings(buffer) == "lf"  # type: ignore[arg-type]


def test_endings_at_the_edges() -> None:
    # A lone CR or a bare LF at the start, the end, or beside a CRLF makes the endings mixed.
    cases = {b"a\r\nb\r\n": "crlf", b"\r\n": "crlf", b"a\r\nb": "crlf", b"a\nb\n": "lf", b"abc": "lf",
             b"a\r\nb\r": "mixed", b"\ra\r\n": "mixed", b"\na\r\n": "mixed", b"a\r\n\n": "mixed",
             b"a\r\r\n": "mixed", b"a\n\r\n": "mixed", b"a\r\n\rb": "mixed", b"\r": "mixed"}
    for raw, expected in cases.items():
        assert endings(bytes(bytearray(raw))) == expected, raw
