"""A message whose stored fields are damaged costs only itself, and what the operator is shown
of it is the truth: damage named, never a made-up sender or recipients."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.store import keys
from drain.store.record import CORRUPT
from drain.trace import where
from tests.test_cli import drain


def _mail(n: int) -> bytes:
    return (f"From: a@src.example\r\nTo: u{n}@dest.example\r\nSubject: {n}\r\nDate: Mon, 30 Nov 2026 14:00:00 +0000\r\n"
            f"Message-ID: <{n}@src.example>\r\n\r\nhello\r\n").encode()


@pytest.mark.parametrize("env", [
    {"from": "a@src.example", "to": ["u1@dest.example"]},  # an object, not [sender, [recipients]]
    ["a@src.example", "u1@dest.example"],  # recipients a string: its letters were the recipients
    [5, [1, {"a": 2}]],  # numbers and objects made into addresses
])
def test_an_envelope_of_the_wrong_shape_is_damage_not_addresses(client: Client, relay: Sink,
                                                                 work: Callable[..., bool], env: object) -> None:
    """Envelope.from_json unpacked whatever JSON it found: an object gave sender "from" and
    recipients "t", "o"; a string of recipients gave letters. `drain show` showed those as the
    envelope, with no word of damage, and the worker quarantined the message as the producer's
    fault (address.invalid-recipient) instead of store.corrupt. Mutants caught: from_json without
    its shape check; where.show without "damaged"."""
    ids = [client.enqueue(_mail(n)) for n in range(3)]
    client.redis.hset(keys.message(ids[1]), "env", json.dumps(env))
    retention = client.store.settings.trace_retention_s
    doc, _raw = where.show(client.redis, ids[1], retention)  # as the operator sees it, queued
    assert doc["sender"] == "" and doc["recipients"] == []  # not made up from the damage
    assert any("env" in d for d in doc["damaged"])  # and the damage is said
    shown = drain(client.store.settings, "show", ids[1])
    assert shown.returncode == 0 and b"damaged: field env" in shown.stdout and b"<from>" not in shown.stdout
    work()
    assert relay.accepted == 2
    assert all(r.recipients[0].endswith("@dest.example") for r in relay.messages)
    books = client.store.books()
    assert books.delivered == 2 and books.quarantined == 1
    doc, _raw = where.show(client.redis, ids[1], retention)
    assert doc["state"] == "quarantined" and doc["reasons"] == [CORRUPT]
