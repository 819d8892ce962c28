"""The bytes of a message as SMTP carries them: CRLF line endings, then the DATA block
(dot-stuffed, ended by CRLF and the lone dot), each made in as few passes over the bytes as
the message allows (see drain.linescan for what a pass costs)."""

from __future__ import annotations

from drain.linescan import endings, find_line_prefix


def wire_form(raw: bytes) -> bytes:
    """The message with CRLF line endings, as SMTP carries it (files on disk often use LF).

    Every LF not already after a CR gets one; a bare CR stays as it is. A message without
    any CR (LF-only) takes one bytes.replace; a CRLF-clean one is sent as it is (the same
    object); only a message with mixed endings goes through the two-step fix."""
    kind = endings(raw)
    if kind == "lf":
        return raw.replace(b"\n", b"\r\n")
    if kind == "crlf":
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def data_block(wire: bytes) -> bytes:
    """What follows a 354 reply: the CRLF form dot-stuffed (RFC 5321 4.5.2), ended by CRLF
    (added if the last line lacks one) and the lone dot. The same bytes smtplib's
    SMTP.data sends, without its regex pass over the whole message."""
    return b"".join(data_pieces(wire))


def data_pieces(wire: bytes) -> tuple[bytes, ...]:
    """data_block(wire) in pieces, for one gathering write (drain.worker.smtpio.send): the
    message itself (the same object unless a line starts with a dot), then the dot and line
    ends around it, so the end of the block does not copy the whole message once more."""
    if find_line_prefix(wire, b".") >= 0:
        wire = wire.replace(b"\n.", b"\n..")
    end = b".\r\n" if wire[-2:] == b"\r\n" else b"\r\n.\r\n"
    return (b".", wire, end) if wire[:1] == b"." else (wire, end)
