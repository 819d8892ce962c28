"""The workers' address rule answers without running all of email-validator for plain
addresses at domains it accepted before (drain.addressrule.plain_valid): it must only ever
say "valid" where email-validator itself does, so the verdicts stay the same."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from drain import addressrule, validate

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~.-"
DOMAINS = ["example.com", "mail-1.example.org", "EXAMPLE.NET", "xn--bcher-kva.example", "b\u00fccher.example",
           "localhost", "example.test", "x.local", "a.b", "123.45", "-bad.example.com", "bad-.example.com",
           "a..b.com", "example.com.", ".example.com", "a" * 64 + ".com", ("a" * 63 + ".") * 4 + "com",
           "xn--ls8h.la", "under_score.com", "ex ample.com", "[192.0.2.1]", "e.invalid", "\u0131.example.com"]
local_parts = st.text(ATEXT, min_size=0, max_size=70) | st.sampled_from(
    ["a", "postmaster", "Abuse", "a.b", ".a", "a.", "a..b", "\"q\"", "a b", "\u00fc", "a" * 64, "a" * 65, "a" * 200])
domains = st.sampled_from(DOMAINS) | st.text(string.ascii_letters + string.digits + ".-", min_size=0, max_size=80)


def _email_validator_says(address: str, special: bool) -> bool:
    return validate.address_error(address, special) is None


@settings(max_examples=3000, deadline=None)
@given(local_parts, domains, st.booleans())
def test_the_quick_rule_never_accepts_what_email_validator_refuses(local: str, domain: str, special: bool) -> None:
    address = f"{local}@{domain}"
    if addressrule.plain_valid(address, special):
        assert _email_validator_says(address, special), address


@settings(max_examples=500, deadline=None)
@given(st.text(ATEXT + "@<>()\"[]\\ ,;:\u00fc\u00e9\t\u0338", max_size=40), st.booleans())
def test_any_text_gets_email_validators_answer(address: str, special: bool) -> None:
    validate._valid_cached.cache_clear()
    assert validate._valid_cached(address, special) == _email_validator_says(address, special)


def test_plain_addresses_take_the_quick_rule_and_lengths_still_count() -> None:
    assert addressrule.plain_valid("user7@example.com", False)
    assert addressrule.plain_valid("b.c+d@mail-1.example.org", False)
    # The total length limit (254 octets), with the domain's forms counted.
    domain = ("a" * 60 + ".") * 3 + "example.com"
    fits = "u" * (254 - 1 - len(domain))
    assert addressrule.plain_valid(f"{fits}@{domain}", False)
    assert not addressrule.plain_valid(f"{fits}x@{domain}", False)
    assert not _email_validator_says(f"{fits}x@{domain}", False)
    # An IDNA domain counts in its Unicode form when that is the longer one (20 CJK
    # characters: 34 octets as given, 68 in UTF-8).
    idna = "xn--fiqaaaaaaaaaaaaaaaaaaa.example"
    fits = "u" * (254 - 1 - 68)
    assert addressrule.plain_valid(f"{fits}@{idna}", False)
    assert not addressrule.plain_valid(f"{fits}x@{idna}", False)
    assert not _email_validator_says(f"{fits}x@{idna}", False)
    # Refused domains, special-use ones unless allowed, and anything not plain go the long way.
    assert not addressrule.plain_valid("user@example.test", False)
    assert addressrule.plain_valid("user@example.test", True)
    for other in ("\"quoted\"@example.com", "Name <a@example.com>", "a@[192.0.2.1]", "\u00fc@example.com", "a@b@c.com",
                  "a..b@example.com", "@example.com", "a@"):
        assert not addressrule.plain_valid(other, False), other
