"""Validation skips the strict header parser on plain address fields (drain.message.plain_address_field):
it must only do so where that parser would not have failed, so the verdicts stay the same."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drain import validate
from drain.message import _PLAIN_FIELD, envelope_from_headers, plain_address_field

_HEAD = (b"From: Sender <sender@example.com>\nTo: %s\nSubject: s\nDate: Mon, 23 Nov 2026 10:00:00 +0000\n"
         b"Message-ID: <m@example.com>\n\nbody\n")


@settings(max_examples=120, deadline=None)
@given(st.from_regex(_PLAIN_FIELD, fullmatch=True))
def test_plain_fields_never_fail_the_strict_parser(value: str) -> None:
    assert plain_address_field(value)
    for name in validate.ADDRESS_FIELDS:
        assert validate._strict_parse_failure.__wrapped__(name, value) is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(' .<>@,"()\\:;-_+=?aZ9\t')), max_size=40))
def test_fields_the_strict_parser_fails_are_not_plain(value: str) -> None:
    if validate._strict_parse_failure.__wrapped__("To", value) is not None:
        assert not plain_address_field(value)


def test_a_field_the_strict_parser_fails_still_gives_parse_crash() -> None:
    # Python 3.11's strict header parser raises on a lone dot as display name.
    raw = _HEAD % b". <user@example.com>"
    assert not plain_address_field(". <user@example.com>")
    assert "parse.crash" in validate.check(raw, envelope_from_headers(raw)).reasons
    plain = _HEAD % b"Customer 7 <user7@example.com>, b.c+d@mail-1.example.org"
    assert validate.check(plain, envelope_from_headers(plain)).reasons == []
