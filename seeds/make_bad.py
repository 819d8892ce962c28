"""Regenerate the bad seed messages that must be written as bytes or generated.

The other files in ``seeds/bad/`` are plain text and are kept in git as they are.
This script writes only the four files whose defects are awkward to keep in a
text editor:

* ``body_nul-byte.eml``              - a NUL byte in the body
* ``body_bare-cr-lf.eml``            - CRLF file with a few lone CR / lone LF line ends
* ``mime_nesting-too-deep.eml``      - multipart/mixed nested 60 levels deep
* ``header_non-ascii-unencoded.eml`` - raw UTF-8 in the Subject header

Run from the repository root::

    python seeds/make_bad.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

BAD_DIR = Path(__file__).resolve().parent / "bad"

NESTING_DEPTH = 60


def _lf(lines: list[str]) -> bytes:
    """Join ASCII lines with LF and end with a final LF."""
    return ("\n".join(lines) + "\n").encode("ascii")


def nul_byte() -> bytes:
    head = _lf(
        [
            "From: Export Job <export@example.com>",
            "To: Data Team <data-team@example.org>",
            "Date: Sat, 26 Apr 2025 06:10:00 +0000",
            "Message-ID: <export-nul.20250426@example.com>",
            "Subject: CSV export finished",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=us-ascii",
            "Content-Transfer-Encoding: 7bit",
            "",
            "The nightly CSV export finished. First rows of the file:",
            "",
            "id,name,balance",
            "1001,Acme Widgets,1520.00",
        ]
    )
    # A C string terminator leaked into the body from a fixed-width buffer.
    broken_row = b"1002,Globex Ltd\x00\x00\x00,88.10\n"
    tail = _lf(
        [
            "1003,Initech,0.00",
            "",
            "The second row above contains NUL bytes copied from a fixed-width field.",
        ]
    )
    return head + broken_row + tail


def bare_cr_lf() -> bytes:
    header_lines = [
        "From: Legacy Gateway <gateway@example.net>",
        "To: Helpdesk <helpdesk@example.com>",
        "Date: Sat, 26 Apr 2025 07:45:30 +0000",
        "Message-ID: <gw-mixed-eol.5521@example.net>",
        "Subject: Ticket 5521 updated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
        "",
    ]
    crlf = b"\r\n"
    out = b"".join(line.encode("ascii") + crlf for line in header_lines)
    # (line text, line ending) pairs for the body; most end in CRLF, a few do not.
    body: list[tuple[str, bytes]] = [
        ("Ticket 5521 was updated by the legacy gateway.", crlf),
        ("", crlf),
        ("Status:   in progress", b"\r"),  # lone CR
        ("Assignee: second-line support", crlf),
        ("Priority: normal", b"\n"),  # lone LF
        ("", crlf),
        ("The gateway re-wraps lines written on an old system, and a few", b"\n"),  # lone LF
        ("line ends come out as a bare CR or a bare LF instead of CRLF.", b"\r"),  # lone CR
        ("", crlf),
        ("-- helpdesk gateway", crlf),
    ]
    for text, ending in body:
        out += text.encode("ascii") + ending
    return out


def nesting_too_deep(depth: int = NESTING_DEPTH) -> bytes:
    lines = [
        "From: Forward Loop <loop@example.org>",
        "To: Archive <archive@example.com>",
        "Date: Sun, 27 Apr 2025 12:00:00 +0000",
        "Message-ID: <forward-loop-60@example.org>",
        f"Subject: Fwd: (x{depth}) auto-forward loop between two mailboxes",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="nest-01"',
        "",
    ]
    # Open every level: each multipart holds a short text part and the next level.
    for level in range(1, depth + 1):
        boundary = f"nest-{level:02d}"
        lines += [
            f"--{boundary}",
            "Content-Type: text/plain; charset=us-ascii",
            "",
            f"Forward level {level} of {depth}.",
            "",
            f"--{boundary}",
        ]
        if level < depth:
            lines += [f'Content-Type: multipart/mixed; boundary="nest-{level + 1:02d}"', ""]
        else:
            lines += [
                "Content-Type: text/plain; charset=us-ascii",
                "",
                "Original message at the bottom of the forward loop.",
                "",
            ]
    # Close every level, innermost first.
    for level in range(depth, 0, -1):
        lines += [f"--nest-{level:02d}--", ""]
    return _lf(lines[:-1])


def non_ascii_unencoded() -> bytes:
    head = _lf(
        [
            "From: Anna Becker <anna.becker@example.org>",
            "To: Familie Schmitz <schmitz@example.net>",
            "Date: Sun, 27 Apr 2025 18:22:05 +0200",
            "Message-ID: <koeln-gruesse.3b9f@example.org>",
        ]
    )
    # Raw UTF-8 in a header, not wrapped in an RFC 2047 encoded word.
    subject = "Subject: Grüße aus Köln\n".encode()
    tail = _lf(
        [
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=us-ascii",
            "Content-Transfer-Encoding: 7bit",
            "",
            "Hallo zusammen,",
            "",
            "we arrived safely and the weather is better than forecast.",
            "Photos follow once we are back home.",
            "",
            "Anna",
        ]
    )
    return head + subject + tail


FILES: dict[str, Callable[[], bytes]] = {
    "body_nul-byte.eml": nul_byte,
    "body_bare-cr-lf.eml": bare_cr_lf,
    "mime_nesting-too-deep.eml": nesting_too_deep,
    "header_non-ascii-unencoded.eml": non_ascii_unencoded,
}


def main() -> int:
    BAD_DIR.mkdir(parents=True, exist_ok=True)
    for name, build in FILES.items():
        path = BAD_DIR / name
        data = build()
        path.write_bytes(data)
        print(f"wrote {path} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
