"""envelope_from_headers reads the header block faster (the blank line found from its LF, field
names compared as bytes) and must read it as the plain line-by-line scan does: the scan below,
written the slow, obvious way, is the reference on generated header blocks with CR/LF mixes,
folded lines, Resent-* blocks, odd spacing and 8-bit bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drain import message
from drain.message import Envelope, envelope_from_headers
from drain.store import events

NAMES = ["From", "to", "CC", "Bcc", "Sender", "Return-Path", "Resent-From", "RESENT-TO", "Resent-Cc",
         "Resent-Sender", "Resent-Bcc", "Subject", "X-\xfcber", "Received", "Message-ID", "to ", " Cc"]
VALUES = ["a@b.example", "Ann <ann@x.example>", "<>", " b@c.example , d@e.example", '"Q, R" <q@r.example>',
          "", "not an address", "u\xe9@x.example", "<bounce@y.example>"]
ENDS = ["\n", "\r\n", "\r", "\n\r"]


def reference(raw: bytes) -> Envelope:
    """The envelope by a line-by-line reading that decodes every field name."""
    split = message._BLANK_LINE.search(raw)
    head = raw[: split.start()] if split else raw
    fields: dict[str, list[str]] = {}
    current: list[str] | None = None
    resent = 0
    for line in head.split(b"\n"):
        line = line.rstrip(b"\r")
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current[-1] += " " + line.strip().decode("ascii", "surrogateescape")
            continue
        name, colon, value = line.partition(b":")
        key = name.strip().lower().decode("ascii", "replace")
        resent = max(resent, 1) if key.startswith("resent-") else (2 if resent else 0)
        wanted = {"return-path", "sender", "from", "to", "cc", "bcc", "resent-sender", "resent-from", "resent-to",
                  "resent-cc", "resent-bcc"}
        if colon and key in wanted and not (resent == 2 and key.startswith("resent-")):
            current = fields.setdefault(key, [])
            current.append(value.strip().decode("ascii", "surrogateescape"))
        else:
            current = None
    found = message._addresses(fields.get("resent-sender", [])) or message._addresses(fields.get("resent-from", []))
    if not found and [v.strip() for v in fields.get("return-path", [])][:1] == ["<>"]:
        found = [""]
    for field in ("return-path", "sender", "from"):
        found = found or message._addresses(fields.get(field, []))
    kind = "resent-" if any(f"resent-{k}" in fields for k in ("to", "cc", "bcc")) else ""
    rcpts = message._addresses([v for k in ("to", "cc", "bcc") for v in fields.get(kind + k, [])])
    return Envelope(found[0] if found else "", tuple(dict.fromkeys(rcpts)))


lines = st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES), st.sampled_from(ENDS),
                  st.sampled_from(["", " folded@f.example", "\tmore"]))


@settings(max_examples=400, deadline=None)
@given(st.lists(lines, max_size=8), st.sampled_from(["", "\n", "\r\n", "\r\r\n", "\n\r\n"]),
       st.binary(max_size=20))
def test_the_envelope_is_read_as_the_line_by_line_scan_reads_it(
        fields: list[tuple[str, str, str, str]], blank: str, body: bytes) -> None:
    text = "".join(f"{n}: {v}{e}" + (f"{fold}{e}" if fold else "") for n, v, e, fold in fields)
    raw = text.encode("utf-8", "surrogateescape") + blank.encode() + body
    assert envelope_from_headers(raw) == reference(raw)


def test_a_header_block_ended_by_a_crlf_blank_line_stops_before_its_cr() -> None:
    raw = b"From: a@b.example\r\nTo: c@d.example\r\n\r\nTo: e@f.example\r\n"
    assert envelope_from_headers(raw) == Envelope("a@b.example", ("c@d.example",)) == reference(raw)
    assert envelope_from_headers(b"\n\nTo: x@y.example\n") == Envelope("", ())


def test_the_first_return_path_decides_a_bounce() -> None:
    bounce = b"Return-Path: <>\nReturn-Path: <a@b.example>\nFrom: c@d.example\nTo: e@f.example\n\nx"
    forward = b"Return-Path: <a@b.example>\nReturn-Path: <>\nFrom: c@d.example\nTo: e@f.example\n\nx"
    assert envelope_from_headers(bounce).sender == "" == reference(bounce).sender
    assert envelope_from_headers(forward).sender == "a@b.example" == reference(forward).sender


def test_only_short_address_fields_are_remembered() -> None:
    """A batch's repeated From is read once; a long field (a hostile or huge To) is read
    each time and not kept. Mutant caught: every field cached whatever its length."""
    message._field_addresses.cache_clear()
    many = ", ".join(f"u{i}@x.example" for i in range(40))
    raw = f"From: A <a@b.example>\nTo: {many}\n\nx".encode()
    for _ in range(2):
        assert envelope_from_headers(raw) == Envelope("a@b.example", tuple(f"u{i}@x.example" for i in range(40)))
    info = message._field_addresses.cache_info()
    assert (info.currsize, info.hits) == (1, 1)


MID_NAMES = ["Message-ID", "message-id", "MESSAGE-Id", " Message-ID", "Message-ID ", "Message-IDs", "X-Message-ID",
             "From", "To", "Resent-To", "MIME-Version", "M"]
MID_VALUES = ["<a@b.example>", " <a@b.example> ", "", "<x\rafter@c.example>", "<\xe9t\xe9@d.example>",
              "<" + "n" * 320 + "@e.example>", "a@b.example"]
mid_lines = st.tuples(st.sampled_from(MID_NAMES), st.sampled_from(MID_VALUES), st.sampled_from(ENDS),
                      st.sampled_from(["", " <folded@f.example>"]))


@settings(max_examples=400, deadline=None)
@given(st.lists(mid_lines, max_size=8), st.sampled_from(["", "\n", "\r\n", "\n\r\n"]), st.binary(max_size=20))
def test_the_message_id_met_by_the_scan_is_the_one_the_received_event_reads(
        fields: list[tuple[str, str, str, str]], blank: str, body: bytes) -> None:
    """The envelope scan notes the Message-ID on its way so the enqueue need not read the
    header block again: it must be events.message_id's (the first line starting with
    `message-id:` in any case, up to a CR, stripped, capped), or None when not known.
    Mutants caught: a later Message-ID line kept over the first; the name matched after
    strip() (" Message-ID:"); the value not cut at its CR; no cap."""
    text = "".join(f"{n}: {v}{e}" + (f"{fold}{e}" if fold else "") for n, v, e, fold in fields)
    raw = text.encode("utf-8", "surrogateescape") + blank.encode() + body
    env = envelope_from_headers(raw)
    if message._BLANK_LINE_LF.search(raw) is None:
        assert env.message_id is None
    else:
        assert env.message_id == events.message_id(raw)
    assert env == reference(raw)


def test_the_message_id_rides_along_but_is_no_part_of_the_envelope() -> None:
    raw = b"From: a@b.example\nTo: c@d.example\nMessage-ID: <m@b.example>\n\nx"
    env = envelope_from_headers(raw)
    assert env.message_id == "<m@b.example>" and env == Envelope("a@b.example", ("c@d.example",))
    assert env.to_json() == '["a@b.example",["c@d.example"]]'
    assert envelope_from_headers(b"From: a@b.example\n\nx").message_id == ""


def test_the_message_id_is_capped_and_its_name_is_exact() -> None:
    """Mutants caught: no cap (332 characters); the name matched with spaces before its colon."""
    long = b"From: a@b.example\nMessage-ID: <" + b"n" * 320 + b"@e.example>\n\nx"
    assert envelope_from_headers(long).message_id == events.message_id(long) and len(events.message_id(long)) == 300
    spaced = b"From: a@b.example\nMessage-ID : <m@b.example>\n\nx"
    assert envelope_from_headers(spaced).message_id == events.message_id(spaced) == ""
