"""MAIL FROM and RCPT TO arguments: drain's quick quoting gives smtplib.quoteaddr's answers."""

from __future__ import annotations

import smtplib
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from drain.worker.addresses import quote_address

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~.-"
plain = st.builds(lambda local, domain: f"{local}@{domain}",
                  st.text(ATEXT, min_size=1, max_size=20),
                  st.text(string.ascii_letters + string.digits + ".-", min_size=1, max_size=20))
anything = st.text(ATEXT + "@<>()\"[]\\ ,;:üé\t", max_size=30)


@settings(max_examples=2000, deadline=None)
@given(plain)
def test_plain_addresses_quote_as_smtplib_does(address: str) -> None:
    assert quote_address(address) == smtplib.quoteaddr(address) == f"<{address}>"


@settings(max_examples=2000, deadline=None)
@given(anything)
def test_any_text_quotes_as_smtplib_does(address: str) -> None:
    assert quote_address(address) == smtplib.quoteaddr(address)


def test_the_null_sender_and_bracketed_forms() -> None:
    for address in ("", "<>", "<a@example.com>", "Name <a@example.com>", "a(comment)@example.com",
                    "\"quoted local\"@example.com", "user@[192.0.2.1]", "ü@example.com"):
        assert quote_address(address) == smtplib.quoteaddr(address), address
