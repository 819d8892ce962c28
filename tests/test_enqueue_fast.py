"""The producer's one-pass chunk (drain/store/enqueue.py, events.received_parts): what it
writes is what the slower, obvious forms write: the received event's data and lookup
records as events.received gives them, the envelope's JSON reused only where it fits."""

from __future__ import annotations

import json

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from drain.intake.api import Client, Submission
from drain.message import Envelope
from drain.store import events, keys

RAW = b"From: x@y.example\nMessage-ID: <id-1@y.example>\nSubject: s\n\nbody\n"
ENVELOPES = [Envelope("billing@sender.example.com", ("user7@news.example.org",)),
             Envelope("", ("A@Two.example", "b@two.example", "a@two.example")),
             Envelope("j\u00f6rg@m\u00fcnchen.example", ("\u00e5se@nord.example", "x@y.example")),
             Envelope('odd"name\\@q.example', ("z@q.example",))]


@pytest.mark.parametrize("env", ENVELOPES)
@pytest.mark.parametrize("tenant", ["", "acme"])
@pytest.mark.parametrize("raw", [RAW, b"To: x@y.example\n\nno message id\n"])
def test_received_parts_are_the_received_event(env: Envelope, tenant: str, raw: bytes) -> None:
    """Mutants caught: the tenant left out of the written form; a recipient or Message-ID
    record hashed from the wrong value; the domain records not deduplicated."""
    event = events.received("", raw, env.sender, env.recipients, "api", tenant)
    want = (event.data, [events.index_record(v) for v in event.values])
    for pair in ("", env.to_json()):
        data, records = events.received_parts(raw, env.sender, env.recipients, "api", tenant, pair)
        assert (json.loads(data), records) == (json.loads(events._json(want[0])), want[1]), pair


@pytest.mark.parametrize("env", ENVELOPES)
@pytest.mark.parametrize("raw", [RAW, b"To: x@y.example\n\nno message id\n"])
def test_received_parts_give_each_value_of_a_call_once(env: Envelope, raw: bytes) -> None:
    """With the call's `seen` values (Enqueue._call): the first message gives every record
    of its received event, a second message with the same values none, and the data stays
    the same. Mutants caught: a value not added to `seen` (records again); `seen` not read
    (records again); a value in `seen` leaving out a record of another value."""
    event = events.received("", raw, env.sender, env.recipients, "api", "acme")
    want = [events.index_record(v) for v in event.values]
    seen: set[str] = set()
    first = events.received_parts(raw, env.sender, env.recipients, "api", "acme", env.to_json(), seen=seen)
    again = events.received_parts(raw, env.sender, env.recipients, "api", "acme", env.to_json(), seen=seen)

    assert first[1] == want and again[1] == [] and first[0] == again[0]
    other = events.received_parts(raw, env.sender, ("new@other.example",), "api", "acme", seen=seen)[1]
    assert other == [events.index_record("r:new@other.example"), events.index_record("d:other.example")]


def test_an_smtputf8_message_keeps_its_received_event_fields(client: Client, rclient: redis.Redis) -> None:
    """The envelope's JSON carries a third element for SMTPUTF8 mail: the received event is
    then encoded whole, never written around it. Mutant caught: the envelope's JSON reused
    for SMTPUTF8 mail too (the event's tenant would read 1)."""
    raw = "From: j\u00f6rg@m\u00fcnchen.example\nTo: x@y.example\nMessage-ID: <u@m.example>\n\nhi\n".encode()
    plain, utf8 = Envelope("a@b.example", ("x@y.example",)), Envelope("j\u00f6rg@m\u00fcnchen.example",
                                                                      ("x@y.example",), smtputf8=True)
    ids = client.store.enqueue_many([(raw, plain, None), (raw, utf8, None)], tenants=["t1", "t2"])
    docs = {d["id"]: d for d in events.decode_all(rclient.xrange(keys.EVENTS)) if d["event"] == "received"}
    assert [(docs[i]["sender"], docs[i]["recipients"], docs[i]["tenant"], docs[i]["message_id"]) for i in ids] == [
        ("a@b.example", ["x@y.example"], "t1", "<u@m.example>"),
        ("j\u00f6rg@m\u00fcnchen.example", ["x@y.example"], "t2", "<u@m.example>")]
    assert Envelope.from_json(rclient.hget(keys.message(ids[1]), "env") or b"") == utf8


def test_the_headers_envelope_is_kept_only_when_nothing_changes_it(client: Client, rclient: redis.Redis) -> None:
    """Client.prepare keeps the envelope read from the headers as it is when neither the
    caller nor the one-copy-per-mailbox rule changes it. Mutants caught: the headers'
    envelope kept whatever the caller gave or the rule removed; the rule skipped for a few
    recipients."""
    raw = b"From: a@b.example\nTo: u@X.example, u@x.example, v@y.example\nSubject: s\n\nhi\n"
    ids = client.enqueue_many([raw, Submission(raw, sender="ops@c.example"),
                               Submission(raw, recipients=("w@z.example",))]).ids
    envs = [Envelope.from_json(rclient.hget(keys.message(i), "env") or b"") for i in ids]
    assert envs == [Envelope("a@b.example", ("u@X.example", "v@y.example")),
                    Envelope("ops@c.example", ("u@X.example", "v@y.example")),
                    Envelope("a@b.example", ("w@z.example",))]


MID_NAMES = ["Message-ID", "message-id", "MESSAGE-ID", "Message-ID ", " Message-ID", "\tMessage-Id", "X-Message-ID",
             "Message-IDs", "Subject", "To"]
MID_VALUES = ["<a@b.example>", "  <c@d.example>  ", "", "\t<e@f.example>\r", "<g\xe9@h.example>", "x\x0by", "a" * 300]
MID_ENDS = ["\n", "\r\n", "\r", "\n\r"]


def mid_by_regex(raw: bytes) -> str:
    """The Message-ID as a multi-line, case-blind regex over the header block reads it."""
    import re
    end = re.search(rb"\n\r?\n", raw)
    found = re.compile(rb"^message-id:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE).search(
        raw, 0, end.start() if end else min(len(raw), 65536))
    return found.group(1).decode("utf-8", "replace").strip()[:events.TEXT_MAX] if found else ""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(MID_NAMES), st.sampled_from(MID_VALUES), st.sampled_from(MID_ENDS)),
                max_size=6),
       st.sampled_from(["", "\n", "\r\n", "\n\r\n"]), st.binary(max_size=30))
def test_the_message_id_is_the_first_field_of_that_name(fields: list[tuple[str, str, str]], blank: str,
                                                         body: bytes) -> None:
    """events.message_id (bytes.find in the lowercased header block) reads what the regex
    reads. Mutants caught: the block not led by an LF (a first-line field missed), a
    field found in the body, the value cut at the first space instead of the line's end."""
    raw = "".join(f"{n}:{v}{e}" for n, v, e in fields).encode("utf-8", "surrogateescape") + blank.encode() + body
    assert events.message_id(raw) == mid_by_regex(raw)
    assert events.message_id(b"Message-ID: <1@x.example>\n\nMessage-ID: <2@x.example>\n") == "<1@x.example>"
    assert events.message_id(b"To: a@b.example\n\nMessage-ID: <2@x.example>\n") == ""
