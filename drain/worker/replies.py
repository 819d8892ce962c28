"""The relay's replies, read as smtplib's SMTP.getreply reads them, for less Python per reply.

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

import smtplib

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
