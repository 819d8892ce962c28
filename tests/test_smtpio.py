"""drain.worker.smtpio: read_reply gives what smtplib's getreply gives, from the same bytes on
a real socket however they arrive (together, split at any byte, with lines too long, cut
off, garbled), and leaves the socket where getreply would; and a multi-line refusal from a
real relay to pipelined commands is judged with its whole text."""

from __future__ import annotations

import contextlib
import smtplib
import socket
import threading

import pytest

from drain.demo.sink import Sink
from drain.worker import smtpio
from drain.worker.delivery import Relay, RelayConfig
from drain.worker.smtpio import MAXLINE, read_reply

BURSTS = {
    "pipelined": b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
    "multi-line": b"550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 last\r\n250 ok\r\n",
    "garbled": b"hello there\r\n250 ok\r\n",
    "bare LF and a short code": b"250 ok\n25\r\n451 later\r\n",
    "too long": b"250 " + b"x" * MAXLINE + b"\r\n",
    "one byte too long": b"250 " + b"z" * (MAXLINE - 5) + b"\r\n250 next\r\n",
    "longest allowed": b"250 " + b"y" * (MAXLINE - 6) + b"\r\n250 next\r\n",
    "cut off": b"250-more to come\r\n",
}


def _replies(burst: bytes, cuts: list[int], read: str) -> list[object]:
    """Feed `burst` in pieces (split at `cuts`) to an SMTP client on a socketpair; read replies
    with `read` ("drain" or "smtplib") until the client raises; what each read gave."""
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    smtp = smtplib.SMTP()
    smtp.sock, smtp.file = ours, ours.makefile("rb")
    pieces = [burst[a:b] for a, b in zip([0, *cuts], [*cuts, len(burst)], strict=True)]
    gate = threading.Event()

    def feed() -> None:
        with contextlib.suppress(OSError):  # the client may close first (a line too long)
            for piece in pieces:
                theirs.sendall(piece)
                gate.wait(0.002)  # separate segments, most of the time
            theirs.shutdown(socket.SHUT_WR)

    feeder = threading.Thread(target=feed)
    feeder.start()
    out: list[object] = []
    try:
        for _ in range(10):
            try:
                out.append(read_reply(smtp) if read == "drain" else smtp.getreply())
            except smtplib.SMTPException as exc:
                out.append((type(exc).__name__, str(exc), smtp.sock is None))
                break
    finally:
        feeder.join()
        theirs.close()
        ours.close()
    return out


@pytest.mark.parametrize("name", list(BURSTS))
def test_read_reply_gives_what_getreply_gives(name: str) -> None:
    """Mutants caught: the last line's code not the reply's (multi-line); a line without a
    code not -1 (garbled); the length limit off by one (too long / longest allowed); the
    bytes used not consumed (pipelined: the same reply twice); a cut-off reply not closing."""
    burst = BURSTS[name]
    every = list(range(1, len(burst), max(7, len(burst) // 40)))
    splits = [[], [1], [3], [4], [len(burst) // 2], [len(burst) - 1], every]
    for cuts in splits:
        assert _replies(burst, cuts, "drain") == _replies(burst, cuts, "smtplib"), (name, cuts)


def test_a_timeout_is_getreplys_disconnect_with_the_timeout_as_context() -> None:
    """A relay that says nothing: SMTPServerDisconnected, session closed, TimeoutError as its
    context (delivery tells RelayTimeout from it). Mutant caught: the OSError not caught."""
    ours, theirs = socket.socketpair()
    ours.settimeout(0.05)
    smtp = smtplib.SMTP()
    smtp.sock, smtp.file = ours, ours.makefile("rb")
    with pytest.raises(smtplib.SMTPServerDisconnected) as caught:
        read_reply(smtp)
    assert isinstance(caught.value.__context__, TimeoutError) and smtp.sock is None
    theirs.close()


def test_a_multi_line_refusal_to_pipelined_recipients_keeps_its_text() -> None:
    """A relay refusing one recipient with a three-line 550 and taking the other: with and
    without PIPELINING the same result, the refusal's text whole (its lines joined)."""
    def rcpt(address: str) -> str | None:
        return "550-5.1.1 no such user\r\n550-5.1.1 not here\r\n550 5.1.1 gone" if address.startswith("gone") else None

    results = []
    for pipelining in (True, False):
        with Sink(keep=True, rcpt_policy=rcpt, pipelining=pipelining) as relay:
            sender = Relay(RelayConfig.from_url(relay.url), timeout_s=5.0, helo_name="drain.test")
            try:
                raw = b"From: a@example.com\r\nTo: ok@example.org\r\nSubject: s\r\n\r\nbody\r\n"
                results.append(sender.send("a@example.com", ["gone@example.org", "ok@example.org"], raw))
                assert sender.send("a@example.com", ["ok@example.org"], raw).kind == "delivered"
            finally:
                sender.close()
    assert results[0] == results[1]
    assert results[0].kind == "delivered"
    assert results[0].refused == {"gone@example.org": (550, "5.1.1 no such user 5.1.1 not here 5.1.1 gone")}


def test_send_hands_over_every_byte_when_the_kernel_takes_part() -> None:
    """More than the socket buffers hold: the rest goes through smtplib's send, the peer gets
    every byte in order. Mutant caught: what os.write did not take dropped."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.settimeout(5)
    smtp = smtplib.SMTP()
    smtp.sock = ours
    data = bytes(range(256)) * 16384  # 4 MB
    got = bytearray()

    def read() -> None:
        while chunk := theirs.recv(65536):
            got.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    smtpio.send(smtp, data)
    ours.shutdown(socket.SHUT_WR)
    reader.join()
    assert bytes(got) == data
    ours.close()
    theirs.close()


def test_send_of_pieces_hands_over_every_byte_in_order() -> None:
    """The DATA block goes out as pieces in one writev (the message, then its final dot):
    the peer gets them joined, also when the kernel takes only part of them. Mutants caught:
    the rest after a partial write taken from the first piece only; a piece left out."""
    for size in (100, 4 * 1024 * 1024):
        ours, theirs = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.settimeout(5)
        smtp = smtplib.SMTP()
        smtp.sock = ours
        pieces = (b".", bytes(range(256)) * (size // 256), b"\r\n.\r\n")
        got = bytearray()

        def read(peer: socket.socket = theirs, into: bytearray = got) -> None:
            while chunk := peer.recv(65536):
                into.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        smtpio.send(smtp, *pieces)
        ours.shutdown(socket.SHUT_WR)
        reader.join()
        assert bytes(got) == b"".join(pieces)
        ours.close()
        theirs.close()


def test_send_to_a_relay_that_went_away_is_smtplibs_disconnect() -> None:
    """The peer closed: SMTPServerDisconnected and the session closed, as SMTP.send does.
    Mutant caught: the OSError let through (BrokenPipeError)."""
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    theirs.close()
    smtp = smtplib.SMTP()
    smtp.sock = ours
    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtpio.send(smtp, b"mail FROM:<a@example.com>\r\n")
    assert smtp.sock is None
