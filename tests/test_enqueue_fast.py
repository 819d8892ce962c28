"""The producer's one-pass chunk (drain/store/enqueue.py, events.received_parts): what it
writes is what the slower, obvious forms write: the received event's data and lookup
records as events.received gives them, the envelope's JSON reused only where it fits."""

from __future__ import annotations

import json

import pytest
import redis

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
