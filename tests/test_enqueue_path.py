"""The enqueue path's stored forms: the envelope's JSON and the backlog shape of a chunk."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from drain.demo.seeding import synthetic
from drain.flow import ratelimit
from drain.intake.api import Client, Submission
from drain.message import Envelope
from drain.observe.backlog import shape


def test_envelope_json_is_compact_and_reads_back() -> None:
    plain = Envelope("a@example.com", ("b@example.org", "c@example.net"))
    assert plain.to_json() == '["a@example.com",["b@example.org","c@example.net"]]'
    utf8 = Envelope("jürgen@example.com", ("ß@example.org",), smtputf8=True)
    assert utf8.to_json() == '["j\\u00fcrgen@example.com",["\\u00df@example.org"],1]'
    assert Envelope.from_json(utf8.to_json()) == utf8
    assert Envelope.from_json(plain.to_json()) == plain


def test_shape_counts_each_domain_of_one_chunk(client: Client) -> None:
    ratelimit.pause(client.redis)
    domains = ["a.example.com", "b.example.org", "a.example.com"]
    client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@{domains[i % 3]}",)) for i in range(9)])
    assert [(d.domain, d.total) for d in shape(client.store, pace=10.0).domains] == [("a.example.com", 6),
                                                                                      ("b.example.org", 3)]


TEXTS = st.text(st.characters(codec="utf-8") | st.sampled_from(['"', "\\", "\x00", "\udcff", "\u2028", "é"]),
                max_size=12)


@settings(max_examples=300, deadline=None)
@given(TEXTS, st.lists(TEXTS, max_size=4), st.booleans())
def test_envelope_json_is_what_json_dumps_writes(sender: str, recipients: list[str], smtputf8: bool) -> None:
    """to_json writes around each string's JSON form. Mutants caught: a string written
    without escapes (quotes, controls, lone surrogates), the SMTPUTF8 flag's place, a
    separator with a space."""
    env = Envelope(sender, tuple(recipients), smtputf8=smtputf8)
    form: list[object] = [sender, recipients, 1] if smtputf8 else [sender, recipients]
    assert env.to_json() == json.dumps(form, separators=(",", ":"))
    assert Envelope.from_json(env.to_json()) == env
