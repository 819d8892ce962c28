"""Bytes to and from the relay for smtplib's session, with fewer system calls and less Python.

`send` hands bytes to the kernel as SMTP.send does; on a plain TCP socket with a timeout,
SMTP.send (socket.sendall) first polls the socket for room, every time: `send` writes at
once and leaves to SMTP.send only what the kernel did not take (a full buffer), so the usual
message costs one system call, not two; the DATA block goes out as pieces (the message, then
its final dot) in one writev. TLS sockets go through SMTP.send as they are.


Replies to pipelined commands (RFC 2920) mostly arrive together in one segment. getreply
takes them a line at a time through the reader's readline with its own checks around each;
`read_reply` splits the lines the reader holds already (one peek, then one read of exactly
the bytes it used), and leaves every line it cannot take whole to getreply itself: a line
not received whole, a line over smtplib's limit, the end of the connection. The result is
getreply's (the code of the last line, -1 for a line without a three-digit code; the texts
of every line joined by LF), and so are its failures: a connection that fails or times out
closes the session and raises SMTPServerDisconnected with the socket's error as context.
"""

from __future__ import annotations

import os
import smtplib
import socket
import sys

# smtplib's longest reply line (smtplib._MAXLINE); longer lines are refused by getreply.
MAXLINE = 8192


def read_reply(smtp: smtplib.SMTP) -> tuple[int, bytes]:
    """One reply of the relay, as smtp.getreply() gives it."""
    file = smtp.file
    if file is None or smtp.debuglevel > 0:
        return smtp.getreply()
    try:
        data = file.peek(1)  # what the reader holds, or one read of the socket when it holds nothing
    except OSError as exc:
        smtp.close()
        raise smtplib.SMTPServerDisconnected(f"Connection unexpectedly closed: {exc}") from exc
    lines: list[bytes] = []
    start = 0
    while True:
        end = data.find(b"\n", start, start + MAXLINE)
        if end < 0:  # not held whole (or too long): getreply reads the rest of the reply
            file.read(start)
            code, rest = smtp.getreply()
            return code, b"\n".join([*lines, rest])
        line = data[start:end + 1]
        start = end + 1
        lines.append(line[4:].strip(b" \t\r\n"))
        try:
            code = int(line[:3])
        except ValueError:
            code = -1
        if code == -1 or line[3:4] != b"-":
            file.read(start)
            return code, b"\n".join(lines)


def send(smtp: smtplib.SMTP, data: bytes, *more: bytes) -> None:
    """smtp.send(data + b"".join(more)): the same bytes, the same failure (the session closed
    and SMTPServerDisconnected), one write where the kernel has room; several pieces go in
    one gathering write (writev), not joined first."""
    sock = smtp.sock
    if sock is None or type(sock) is not socket.socket or smtp.debuglevel > 0 or os.name != "posix":
        smtp.send(b"".join((data, *more)) if more else data)
        return
    pieces = (data, *more)
    for piece in pieces:
        sys.audit("smtplib.send", smtp, piece)
    try:
        sent = os.writev(sock.fileno(), pieces) if more else os.write(sock.fileno(), data)
    except BlockingIOError:
        sent = 0
    except OSError as exc:
        smtp.close()
        raise smtplib.SMTPServerDisconnected("Server not connected") from exc
    total = len(data) + sum(map(len, more))
    if sent < total:
        smtp.send(memoryview(b"".join(pieces) if more else data)[sent:])
