"""One-off measurement (benchmarks/fixed-costs-2026-11-30.md): two SMTP ideas for the worker's
fixed cost per message, timed alone before writing them.

1. Reading the three replies to a pipelined MAIL/RCPT/DATA: smtplib's getreply() three times
   against one pass over the bytes already buffered (peek, split lines, int codes, one read).
   The replies sit in a buffered reader, so only the Python work is timed.
2. Sending the DATA bytes (2 KB): socket.sendall() on a socket with a timeout (poll, then
   send) against os.write() on its descriptor (no poll), a socketpair's peer reading them.

Usage: .venv/bin/python benchmarks/smtp_micro_2026-11-30.py
"""

from __future__ import annotations

import io
import os
import smtplib
import socket
import time

REPLIES = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
N = 50000


def one_pass(smtp: smtplib.SMTP, count: int) -> list[tuple[int, bytes]]:
    file = smtp.file
    assert file is not None
    data = file.peek(1)
    out, start = [], 0
    for _ in range(count):
        end = data.find(b"\n", start)
        line = data[start:end + 1]
        start = end + 1
        out.append((int(line[:3]), line[4:].strip(b" \t\r\n")))
    file.read(start)
    return out


def replies() -> None:
    smtp = smtplib.SMTP()
    ways = {"getreply() x3": lambda: [smtp.getreply() for _ in range(3)], "one pass": lambda: one_pass(smtp, 3)}
    for name, read in ways.items():
        best = float("inf")
        for _ in range(5):
            smtp.file = io.BufferedReader(io.BytesIO(REPLIES * N), buffer_size=len(REPLIES) * 100)
            started = time.perf_counter()
            for _ in range(N):
                read()
            best = min(best, time.perf_counter() - started)
        print(f"replies, {name}: {best / N * 1e6:.2f} µs per message (best of 5)")


def sends() -> None:
    a, b = socket.socketpair()
    a.settimeout(30)
    data = b"x" * 2048
    ways = {"sendall (poll + send)": lambda: a.sendall(data), "os.write": lambda: os.write(a.fileno(), data)}
    for name, send in ways.items():
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(N // 5):
                send()
                b.recv(65536)
            best = min(best, time.perf_counter() - started)
        print(f"2 KB send, {name}: {best / (N // 5) * 1e6:.2f} µs per message with the peer's recv (best of 5)")


if __name__ == "__main__":
    replies()
    sends()
