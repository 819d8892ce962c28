"""The Python API given an envelope Redis cannot hold: drain.errors, never another exception."""

from __future__ import annotations

from typing import Any

import pytest

from drain.errors import InputError
from drain.intake.api import Client, Submission

RAW = b"Subject: x\r\nFrom: a@example.com\r\n\r\nbody\r\n"


@pytest.mark.parametrize("envelope", [
    {"sender": "a@example.com", "recipients": ["b\udcff@example.org"]},
    {"sender": "a\udcff@example.com", "recipients": ["b@example.org"]},
    {"sender": "a@example.com", "recipients": [None]},
    {"sender": "a@example.com", "recipients": [b"b@example.org"]},
])
def test_an_address_that_is_not_utf8_text_is_an_input_error_and_nothing_is_queued(
        envelope: dict[str, Any], client: Client) -> None:
    """A recipient holding a lone surrogate (what os.fsdecode or surrogateescape leave for a
    byte they cannot read) raised UnicodeEncodeError out of Client.enqueue, and a None or
    bytes recipient an AttributeError or TypeError: the contract says refusals are
    drain.errors. Mutant caught: api._holdable not called in prepare."""
    with pytest.raises(InputError):
        client.enqueue(RAW, **envelope)
    result = client.enqueue_many([Submission(RAW, **envelope), RAW])
    assert len(result.ids) == 1 and len(result.rejected) == 1
    assert client.store.books().accepted == 1
