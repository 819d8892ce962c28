"""The workers' address rule: email-validator's verdict on an address (no DNS unless asked),
remembered for the last few thousand addresses, with a quick way to "valid" for plain
addresses at domains it accepted before (see plain_valid); and the parsers validation runs on
the address fields of a header (the strict parser's failure, encoded newlines, the mailboxes)."""

from __future__ import annotations

import re
from email.header import decode_header
from email.policy import default as default_policy
from email.utils import getaddresses
from functools import lru_cache
from typing import Any

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import DOT_ATOM_TEXT, EMAIL_MAX_LENGTH
from email_validator.syntax import validate_email_domain_name


@lru_cache(maxsize=1)
def _resolver() -> Any:
    from email_validator import caching_resolver

    return caching_resolver(timeout=5)


def address_valid(address: str, allow_special_domains: bool = False) -> bool:
    """The workers' address rule, remembered for the last few thousand addresses."""
    return valid_cached(address, allow_special_domains)


@lru_cache(maxsize=8192)
def valid_cached(address: str, allow_special_domains: bool, check_dns: bool = False) -> bool:
    if not check_dns and plain_valid(address, allow_special_domains):
        return True
    return address_error(address, allow_special_domains, check_dns) is None


_PLAIN_DOMAIN = re.compile(r"[A-Za-z0-9.-]+\Z")


def plain_valid(address: str, allow_special_domains: bool) -> bool:
    """True only for an address email-validator accepts, found without running all of it:
    an ASCII dot-atom local part (its own regex) at a domain of letters, digits, dots and
    hyphens that it accepted before (remembered per domain), within its length limit.

    For such an address its other steps cannot refuse: there is no display name, quote or
    second @ to split on, NFC and the case folding of RFC 2142 names change nothing's
    length, and its three length checks (as given, normalized, IDNA ASCII) are the local
    part's length + 1 + the domain's three forms' (which `_domain_length` gives). Anything
    else (False) goes through email-validator whole; tests/test_plain_addresses.py checks
    the two agree. A mail backlog brings new recipients at known domains: the domain's
    checks (UTS-46 per character) are most of email-validator's ~20 µs an address."""
    local, at, domain = address.rpartition("@")
    if not at or not address.isascii() or not DOT_ATOM_TEXT.match(local) or not _PLAIN_DOMAIN.match(domain):
        return False
    longest = _domain_length(domain, allow_special_domains)
    return longest is not None and len(local) + 1 + longest <= EMAIL_MAX_LENGTH


@lru_cache(maxsize=4096)
def _domain_length(domain: str, allow_special_domains: bool) -> int | None:
    """The longest of the domain's forms in UTF-8 (as given, normalized, IDNA ASCII) when
    email-validator's domain checks accept it, None when they refuse it."""
    try:
        info = validate_email_domain_name(domain, test_environment=allow_special_domains,
                                          globally_deliverable=not allow_special_domains)
    except EmailNotValidError:
        return None
    return max(len(form.encode()) for form in (domain, info["domain"], info["ascii_domain"]))


def address_error(address: str, allow_special_domains: bool = False, check_dns: bool = False) -> str | None:
    """Why email-validator refuses an address, or None if it is valid: the workers' rule."""
    try:
        validate_email(
            address,
            check_deliverability=check_dns,
            dns_resolver=_resolver() if check_dns else None,
            allow_smtputf8=True,
            allow_quoted_local=True,
            allow_domain_literal=True,
            globally_deliverable=not allow_special_domains,
            test_environment=allow_special_domains,
        )
    except EmailNotValidError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=8192)
def strict_parse_failure(name: str, value: str) -> Exception | None:
    """What the strict header parser raises on this field, if anything (remembered: the
    same senders and recipients come back again and again in a backlog)."""
    try:
        default_policy.header_factory(name, value).addresses  # noqa: B018
    except Exception as exc:
        return exc
    return None


def encoded_newline(value: str) -> bool:
    """Whether an RFC 2047 encoded-word in this field value decodes to CR or LF (which a
    program decoding the field would take for a new header line)."""
    try:
        parts = decode_header(value) if "=?" in value else []
    except Exception:  # a malformed encoded-word: not this finding (the strict parser judges it)
        return False
    return any(b"\r" in part or b"\n" in part if isinstance(part, bytes) else "\r" in part or "\n" in part
               for part, _charset in parts)


@lru_cache(maxsize=1024)
def mailboxes(values: tuple[str, ...]) -> tuple[str, ...]:
    """The addresses getaddresses finds in these field values (remembered: a backlog's mail
    comes from a few senders, ~10 µs a parse)."""
    return tuple(addr for _n, addr in getaddresses(list(values)))
