"""Verdicts: every seed gets the expected one, and any bytes at all give a verdict."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drain import validate
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.message import Envelope, envelope_from_headers
from drain.settings import Settings
from drain.store import keys
from tests import mailgen
from tests.chaos_kit import run_drain
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


# -- generated mail: well-formed is ok, one defect gives exactly its code ----------------------

# Codes the checks give; the rest of SEVERITY comes from workers (poison.*) and operator rules.
CHECK_CODES = sorted(set(validate.SEVERITY) - {"poison.crash", "poison.timeout", "rule.match", "size.over-limit"})


def _codes(raw: bytes, limits: validate.Limits | None = None) -> list[str]:
    return [f.code for f in validate.check(raw, envelope_from_headers(raw), limits).findings]


@settings(max_examples=150, deadline=None)
@given(st.randoms(use_true_random=False))
def test_well_formed_messages_and_mime_trees_are_ok(rng: random.Random) -> None:
    raw = mailgen.well_formed(rng).render()
    verdict = validate.check(raw, envelope_from_headers(raw))
    assert verdict.findings == (), (verdict.findings, raw[:2000])
    assert verdict.ok and verdict.label == "ok"


@pytest.mark.parametrize("code", CHECK_CODES)
@settings(max_examples=25, deadline=None)
@given(rng=st.randoms(use_true_random=False))
def test_one_defect_gives_exactly_its_code(code: str, rng: random.Random) -> None:
    raw = mailgen.with_defect(rng, code)
    verdict = validate.check(raw, envelope_from_headers(raw))
    assert [f.code for f in verdict.findings] == [code], (verdict.findings, raw[:2000])
    assert verdict.ok is (validate.SEVERITY[code] == validate.RECORD)


def test_every_check_code_has_a_generated_defect() -> None:
    assert sorted(mailgen.DEFECTS) == CHECK_CODES


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False), st.data())
def test_size_limit_comes_before_every_other_defect(rng: random.Random, data: st.DataObject) -> None:
    mail = mailgen.well_formed(rng)
    # Several defects at once, each of which alone gives its own code...
    for code in data.draw(st.lists(st.sampled_from(["body.nul-byte", "body.bare-cr-lf", "header.malformed",
                                                     "header.non-ascii-unencoded", "header.missing-from",
                                                     "mime.missing-boundary", "address.no-recipient"]),
                                   min_size=2, max_size=5, unique=True)):
        mailgen.DEFECTS[code](rng, mail)
    raw = mail.render()
    assert "size.over-limit" not in _codes(raw) and _codes(raw)
    # ...and one byte over the limit: the size is all that is reported.
    assert _codes(raw, validate.Limits(max_bytes=len(raw) - 1)) == ["size.over-limit"]
    assert _codes(raw, validate.Limits(max_bytes=len(raw))) == _codes(raw)


def test_missing_date_is_only_recorded() -> None:
    raw = b"From: a@example.com\r\nTo: b@example.org\r\nMessage-ID: <1@x>\r\n\r\nhi\r\n"
    verdict = validate.check(raw, envelope_from_headers(raw))
    assert verdict.ok and verdict.recorded == ["header.missing-date"]


def _readme_table() -> dict[str, str]:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("## Validation", 1)[1].split("\n## ", 1)[0]
    table: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and "`" in cells[0]:
            for code in re.findall(r"`([a-z]+\.[a-z-]+)`", cells[0]):
                table[code] = {"recorded": validate.RECORD, "quarantine": validate.QUARANTINE}[cells[1]]
    return table


def test_every_code_is_in_the_readme_with_its_default() -> None:
    assert _readme_table() == validate.SEVERITY


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_any_bytes_give_a_verdict(raw: bytes) -> None:
    verdict = validate.check(raw, envelope_from_headers(raw))
    assert verdict.label in {"ok", "quarantine"}
    assert all(code in validate.SEVERITY for code in verdict.reasons)


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


def test_drain_check_and_a_worker_give_the_same_verdict(
    tmp_path: Path, client: Client, relay: Sink, work: Callable[..., bool], settings: Settings
) -> None:
    cases = ["ok", *CHECK_CODES]
    raws = []
    for index, case in enumerate(cases):
        rng = random.Random(2200 + index)
        mail = mailgen.well_formed(rng)
        if case != "ok":
            mailgen.DEFECTS[case](rng, mail)
        mail.headers.append(("X-Case", case))
        raws.append(mail.render())
        (tmp_path / f"{index}.eml").write_bytes(raws[-1])
    result = run_drain({"DRAIN_REDIS_URL": settings.redis_url}, "check", "--json",
                       *(str(tmp_path / f"{i}.eml") for i in range(len(cases))))
    assert result.returncode == 0, result.stderr
    checked = [json.loads(line) for line in result.stdout.splitlines()]
    assert [c["path"] for c in checked] == [str(tmp_path / f"{i}.eml") for i in range(len(cases))]

    accepted = client.enqueue_many(raws)
    assert not accepted.rejected
    work()

    quarantined = {m.decode() for m in client.redis.zrange(keys.QUARANTINE, 0, -1)}
    delivered = {case for m in relay.messages for case in cases if f"X-Case: {case}\r\n".encode() in m.data}
    for case, msg_id, cli in zip(cases, accepted.ids, checked, strict=True):
        if cli["verdict"] == "ok":
            assert case in delivered and msg_id not in quarantined, case
        else:
            assert msg_id in quarantined and case not in delivered, case
            why = json.loads(client.redis.hget(keys.message(msg_id), "why") or b"[]")
            assert [f["code"] for f in why] == [f["code"] for f in cli["findings"]], case
    # The cases themselves cover both verdicts, as the severity table says.
    assert {c["verdict"] for c in checked} == {"ok", "quarantine"}
    assert delivered == {"ok", *(c for c in CHECK_CODES if validate.SEVERITY[c] == validate.RECORD)}


def _header_run(walk: Callable[..., object], head: bytes, limits: validate.Limits,
                utf8: bool) -> tuple[list[validate.Finding], object]:
    gen = walk(head, limits, utf8)
    findings: list[validate.Finding] = []
    try:
        while True:
            findings.append(next(gen))  # type: ignore[call-overload]
    except StopIteration as stop:
        return findings, stop.value


_HEAD_LINES = st.sampled_from([
    b"From: a@example.com", b"Subject: hi", b"To : b@example.net", b"X-Tab\t: v", b" folded", b"\tfolded",
    b"no colon", b": no name", b"a b: c", b"From nobody", b"Caf\xc3\xa9: x", b"Subject: caf\xc3\xa9", b"\xff: x",
    b"X: " + b"v" * 994, b"X: " + b"v" * 995, b"X: " + b"v" * 996, b"", b"Key\x7f: v", b"K:\x00\x0b\x0c",
])


@settings(max_examples=500, deadline=None)
@given(st.lists(_HEAD_LINES, max_size=12), st.sampled_from([b"\n", b"\r\n", b"\r"]), st.booleans(), st.booleans(),
       st.sampled_from([500, 3]))
def test_header_lines_fast_path_gives_the_walks_answer(lines: list[bytes], eol: bytes, final_eol: bool,
                                                       utf8: bool, most: int) -> None:
    """The regex path over a clean header block finds what the line walk finds (nothing, or
    too many fields) and the same field names. Mutants caught: a space before the colon
    left out of the names' rstrip; the line length limit not checked; a fold before any
    field taken."""
    head = eol.join(lines) + (eol if final_eol else b"")
    limits = validate.Limits(max_headers=most)
    assert _header_run(validate._header_lines, head, limits, utf8) == \
        _header_run(validate._walk_header_lines, head, limits, utf8)
