"""Verdicts: every seed gets the expected one, and any bytes at all give a verdict."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drain import validate
from drain.message import Envelope, envelope_from_headers
from drain.seeding import synthetic
from tests.conftest import seed


@pytest.mark.parametrize(("name", "raw"), seed("good"), ids=[n for n, _ in seed("good")])
def test_good_seeds_pass(name: str, raw: bytes) -> None:
    verdict = validate.check(raw, envelope_from_headers(raw))
    assert verdict.ok, verdict.findings


@pytest.mark.parametrize(("name", "raw"), seed("bad"), ids=[n for n, _ in seed("bad")])
def test_bad_seeds_get_their_reason(name: str, raw: bytes) -> None:
    verdict = validate.check(raw, envelope_from_headers(raw))
    assert not verdict.ok
    assert name.removesuffix(".eml").replace("_", ".", 1) in verdict.reasons


def test_size_limit_is_checked_before_anything_else() -> None:
    raw = synthetic(1, size=5000)
    verdict = validate.check(raw, envelope_from_headers(raw), validate.Limits(max_bytes=4096))
    assert verdict.reasons == ["size.over-limit"]


def test_missing_date_is_only_recorded() -> None:
    raw = b"From: a@example.com\r\nTo: b@example.org\r\nMessage-ID: <1@x>\r\n\r\nhi\r\n"
    verdict = validate.check(raw, envelope_from_headers(raw))
    assert verdict.ok and verdict.recorded == ["header.missing-date"]


def test_every_code_has_a_severity() -> None:
    assert set(validate.SEVERITY.values()) == {validate.QUARANTINE, validate.RECORD}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_any_bytes_give_a_verdict(raw: bytes) -> None:
    verdict = validate.check(raw, envelope_from_headers(raw))
    assert verdict.label in {"ok", "quarantine"}
    assert all(code in validate.SEVERITY for code in verdict.reasons)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["From", "To", "Cc", "Subject", "Date", "Message-ID", "X-Any"]),
                          st.text(max_size=80)), max_size=12),
       st.binary(max_size=300))
def test_mutated_headers_give_a_verdict(headers: list[tuple[str, str]], body: bytes) -> None:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("utf-8", "surrogatepass")
    raw = head + b"\r\n" + body
    verdict = validate.check(raw, envelope_from_headers(raw))
    assert verdict.label in {"ok", "quarantine"}


def test_envelope_from_hostile_headers_never_raises() -> None:
    assert envelope_from_headers(b"\xff\xfe\x00From: <<<\n\n") == Envelope("", ())


def _msg(headers: str, body: str = "hello\r\n") -> bytes:
    return (headers.replace("\n", "\r\n") + "\r\n" + body).encode()


BASE = "From: a@example.com\nTo: b@example.org\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <1@x>\n"


def test_header_too_many() -> None:
    raw = _msg(BASE + "".join(f"X-Trace-{i}: {i}\n" for i in range(30)))
    verdict = validate.check(raw, envelope_from_headers(raw), validate.Limits(max_headers=20))
    assert "header.too-many" in verdict.reasons


def test_mime_too_many_parts() -> None:
    parts = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(30)) + "--b--\r\n"
    raw = _msg(BASE + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n', parts)
    verdict = validate.check(raw, envelope_from_headers(raw), validate.Limits(max_mime_parts=10))
    assert verdict.reasons == ["mime.too-many-parts"]


def test_boundary_declared_but_absent_is_only_recorded() -> None:
    raw = _msg(BASE + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="nowhere"\n', "just text\r\n")
    verdict = validate.check(raw, envelope_from_headers(raw))
    assert verdict.ok and "mime.boundary-not-found" in verdict.recorded


def test_missing_message_id_is_only_recorded() -> None:
    raw = _msg("From: a@example.com\nTo: b@example.org\nDate: Mon, 23 Nov 2026 10:00:00 +0000\n")
    verdict = validate.check(raw, envelope_from_headers(raw))
    assert verdict.ok and verdict.recorded == ["header.missing-message-id"]


def test_internationalised_mail_passes_when_raw_utf8_headers_are_allowed() -> None:
    raw = ("From: Jörg <jörg@bücher.example>\r\nTo: 用户@例子.example\r\nSubject: Grüße\r\n"
           "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <i18n@x>\r\n\r\nHallo\r\n").encode()
    env = envelope_from_headers(raw)
    assert env.recipients == ("用户@例子.example",)
    strict = validate.check(raw, env)
    assert strict.reasons == ["header.non-ascii-unencoded"]
    relaxed = validate.check(raw, env, severity=validate.severity_with(record=("header.non-ascii-unencoded",)))
    assert relaxed.ok


def test_special_use_domains_follow_the_setting() -> None:
    raw = _msg("From: a@example.com\nTo: b@host.test\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <1@x>\n")
    env = envelope_from_headers(raw)
    assert validate.check(raw, env).reasons == ["address.invalid-recipient"]
    assert validate.check(raw, env, validate.Limits(allow_special_domains=True)).ok


def _nested(outer: str, inner: str) -> bytes:
    return (f"From: a@example.com\r\nTo: b@example.org\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <n@x>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{outer}\"\r\n\r\n"
            f"--{outer}\r\nContent-Type: multipart/alternative; boundary=\"{inner}\"\r\n\r\n"
            f"--{inner}\r\nContent-Type: text/plain\r\n\r\nseen by one parser\r\n"
            f"--{inner}\r\nContent-Type: text/html\r\n\r\n<p>hidden from another</p>\r\n--{inner}--\r\n"
            f"--{outer}\r\nContent-Type: text/plain\r\n\r\ntail\r\n--{outer}--\r\n").encode()


@pytest.mark.parametrize("inner", ["outer", "outer-2", "outer=="])
def test_inner_boundary_equal_to_or_extending_an_outer_one_is_quarantined(inner: str) -> None:
    verdict = validate.check(_nested("outer", inner), envelope_from_headers(_nested("outer", inner)))
    assert verdict.reasons == ["mime.boundary-nested"]
    assert "'outer'" in verdict.findings[-1].detail


@pytest.mark.parametrize("inner", ["inner", "out", "xouter"])
def test_distinct_nested_boundaries_pass(inner: str) -> None:
    raw = _nested("outer", inner)
    assert validate.check(raw, envelope_from_headers(raw)).ok
