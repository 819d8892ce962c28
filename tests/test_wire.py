"""The bytes drain puts on the wire after DATA are the bytes smtplib's own path puts there.

drain prepares the DATA block itself in one pass (drain.worker.delivery.data_block) instead of
letting smtplib's SMTP.data run its regex passes; these tests pin that the result is the same:
byte for byte against smtplib's functions, and as received by a real relay (aiosmtpd).
"""

from __future__ import annotations

import re
import smtplib

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


def test_relay_receives_what_smtplib_would_send(relay: Sink) -> None:
    """Each edge case through Relay.send and, beside it, through smtplib.sendmail with the
    old wire form: the relay receives the same message bytes and envelope."""
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
