"""The bytes drain puts on the wire after DATA are the bytes smtplib's own path puts there.

drain prepares the DATA block itself in one pass (drain.worker.delivery.data_block) instead of
letting smtplib's SMTP.data run its regex passes; these tests pin that the result is the same:
byte for byte against smtplib's functions, and as received by a real relay (aiosmtpd).
"""

from __future__ import annotations

import re
import smtplib
import socket
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drain.demo.sink import Sink
from drain.worker.delivery import Relay, RelayConfig, data_block, wire_form


def _reference_wire(raw: bytes) -> bytes:
    """drain's LF -> CRLF rule as it was written before (a regex)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", raw)


def _reference_block(wire: bytes) -> bytes:
    """What smtplib.SMTP.data sends for bytes: dot-stuffed, CRLF-ended, then the lone dot."""
    quoted = smtplib._quote_periods(wire)  # type: ignore[attr-defined]
    if quoted[-2:] != b"\r\n":
        quoted += b"\r\n"
    return quoted + b".\r\n"


# Messages made of the pieces that matter: dots, CR, LF, CRLF, text.
_PIECES = st.lists(st.sampled_from([b"a", b".", b"..", b"\r", b"\n", b"\r\n", b"\n.", b"From x"]), max_size=40)


@given(_PIECES)
def test_wire_form_and_data_block_match_smtplib(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)
    assert wire_form(raw) == _reference_wire(raw)
    assert data_block(wire_form(raw)) == _reference_block(_reference_wire(raw))


_EDGE_CASES = {
    "lf-only": b"From: a@example.com\nSubject: lf\n\nline one\nline two\n",
    "crlf": b"From: a@example.com\r\nSubject: crlf\r\n\r\nline one\r\nline two\r\n",
    "dot-leading": b"From: a@example.com\nSubject: dots\n\n.\n..two\n.three\r\n.\r\nend\n",
    "no-final-eol": b"From: a@example.com\r\nSubject: no eol\r\n\r\nlast line without EOL",
    "mixed-and-bare-cr": b"From: a@example.com\r\nSubject: mixed\n\nx\ry\n.\r\nz",
}


@pytest.mark.parametrize("pipelining", [True, False])
def test_relay_receives_what_smtplib_would_send(pipelining: bool) -> None:
    """Each edge case through Relay.send and, beside it, through smtplib.sendmail with the
    old wire form: the relay receives the same message bytes and envelope."""
    with Sink(keep=True, pipelining=pipelining) as relay:
        _compare_with_smtplib(relay)


def _compare_with_smtplib(relay: Sink) -> None:
    sender = Relay(RelayConfig.from_url(relay.url), timeout_s=5.0, helo_name="drain.test")
    try:
        for raw in _EDGE_CASES.values():
            assert sender.send("a@example.com", ["b@example.org"], raw).kind == "delivered"
    finally:
        sender.close()
    with smtplib.SMTP("127.0.0.1", int(relay.url.rsplit(":", 1)[1]), local_hostname="drain.test") as smtp:
        for raw in _EDGE_CASES.values():
            smtp.sendmail("a@example.com", ["b@example.org"], _reference_wire(raw))
    got = relay.messages
    assert len(got) == 2 * len(_EDGE_CASES)
    ours, theirs = got[: len(_EDGE_CASES)], got[len(_EDGE_CASES):]
    for name, mine, ref in zip(_EDGE_CASES, ours, theirs, strict=True):
        assert (mine.sender, mine.recipients, mine.data) == (ref.sender, ref.recipients, ref.data), name


class _RawRelay:
    """A small SMTP server on a real socket that records what arrives byte for byte. It
    offers PIPELINING and answers nothing until a client's DATA has come: a client that
    waits for each reply stalls here (and times out) instead of passing."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(10)
        self.port = self.server.getsockname()[1]
        self.batches: list[list[bytes]] = []
        self.blocks: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _peer = self.server.accept()
        conn.settimeout(5)
        with conn, conn.makefile("rb") as reader:
            conn.sendall(b"220 raw.test ESMTP\r\n")
            reader.readline()  # EHLO
            conn.sendall(b"250-raw.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            while True:
                batch: list[bytes] = []
                while not batch or batch[-1].upper() not in (b"DATA\r\n", b"QUIT\r\n", b""):
                    batch.append(reader.readline())
                if batch[-1].upper() != b"DATA\r\n":
                    conn.sendall(b"221 bye\r\n")
                    return
                self.batches.append(batch)
                conn.sendall(b"250 ok\r\n" * (len(batch) - 1) + b"354 go on\r\n")
                block = []
                while not block or block[-1] not in (b".\r\n", b""):
                    block.append(reader.readline())
                self.blocks.append(b"".join(block))
                conn.sendall(b"250 queued\r\n")


def test_pipelined_commands_and_exact_data_bytes() -> None:
    """With PIPELINING offered, MAIL, every RCPT and DATA leave in one go, and the bytes
    after DATA are exactly smtplib's (dot-stuffed, CRLF, terminated) for every edge case."""
    raw_relay = _RawRelay()
    sender = Relay(RelayConfig.from_url(f"smtp://127.0.0.1:{raw_relay.port}"), timeout_s=3.0, helo_name="drain.test")
    try:
        for raw in _EDGE_CASES.values():
            result = sender.send("a@example.com", ["b@example.org", "c@example.org"], raw)
            assert result.kind == "delivered", result
    finally:
        sender.close()
    raw_relay.thread.join(10)
    assert [[line.split(b":")[0].upper() for line in batch] for batch in raw_relay.batches] == \
        [[b"MAIL FROM", b"RCPT TO", b"RCPT TO", b"DATA\r\n"]] * len(_EDGE_CASES)
    assert raw_relay.blocks == [_reference_block(_reference_wire(raw)) for raw in _EDGE_CASES.values()]
