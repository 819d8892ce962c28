"""The MIME tree validation reads from a message's skeleton is the tree of the whole message.

drain.mimeskeleton.structure parses only a message's header blocks and "--" lines when it
can; these tests compare that tree, part by part (type, boundary, defects, children), with
the email package's parse of every line, on messages built to confuse it: boundary-like
lines everywhere, parts without headers, missing blank lines, LF and CRLF, message/* parts.
"""

from __future__ import annotations

import base64
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from hypothesis import given, settings
from hypothesis import strategies as st

from drain.mimeskeleton import _skeleton, structure
from tests import mailgen
from tests.conftest import seed


def _tree(message: Message) -> list[tuple[object, ...]]:
    """Every part in walk order: what the MIME checks read from it."""
    return [(part.get_content_type(), part.get_boundary(), [type(d).__name__ for d in part.defects],
             part.is_multipart(), len(part.get_payload()) if part.is_multipart() else -1)
            for part in message.walk()]


def _same_tree(raw: bytes) -> None:
    bare_cr = raw.count(b"\r") != raw.count(b"\r\n")
    full = BytesParser(policy=compat32).parsebytes(raw)
    assert _tree(structure(raw, bare_cr=bare_cr)) == _tree(full)
    assert [(k, str(v)) for k, v in structure(raw, bare_cr=bare_cr).items()] == [(k, str(v)) for k, v in full.items()]


_LINES = st.sampled_from([
    "--b", "--b--", "--b  ", "--bb", "--bx--", "--", "-- ", "---b", "--c", "--c--",
    "Content-Type: multipart/mixed; boundary=b", "Content-Type: multipart/alternative; boundary=c",
    "Content-Type: multipart/mixed; boundary=bb", "Content-Type: multipart/mixed",
    "Content-Type: text/plain", "Content-Type: message/rfc822", "Content-type: Multipart/Digest; boundary=b",
    "Content-Transfer-Encoding: base64", " folded; boundary=c", "X-Header: value", "no colon here",
    "", "", "", "text line", "aGVsbG8gd29ybGQ=", ".", "From nobody", "x\ry", "\r--b",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINES, max_size=30), st.lists(_LINES, max_size=40), st.sampled_from([b"\n", b"\r\n"]),
       st.booleans())
def test_skeleton_tree_equals_full_tree(head: list[str], body: list[str], eol: bytes, final_eol: bool) -> None:
    lines = ["From: a@example.com", *head, "", *body]
    raw = eol.join(line.encode() for line in lines) + (eol if final_eol else b"")
    _same_tree(raw)


@settings(deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(sorted(mailgen.DEFECTS)))
def test_generated_mail_gives_the_same_tree(rng: object, code: str) -> None:
    _same_tree(mailgen.with_defect(rng, code))  # type: ignore[arg-type]


def test_seeds_give_the_same_tree() -> None:
    for kind in ("good", "bad"):
        for _name, raw in seed(kind):
            _same_tree(raw)


def test_attachment_body_is_left_out() -> None:
    """The point of the skeleton: a base64 attachment's lines are not parsed."""
    attachment = base64.encodebytes(bytes(range(256)) * 300)
    raw = (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
           b"--zz\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
           b"--zz\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + attachment.replace(b"\n", b"\r\n") + b"--zz--\r\n")
    skeleton = _skeleton(raw)
    assert len(skeleton) < 300 and b"hello" not in skeleton
    _same_tree(raw)


def test_lone_cr_ends_a_line_for_the_parser() -> None:
    """The parser splits lines on a lone CR too, so a boundary can follow one: such a
    message is parsed whole (the skeleton's line scan only knows LF)."""
    raw = (b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n"
           b"text\r--b\nContent-Type: text/plain\n\nhi\r--b--\n")
    _same_tree(raw)
    assert len(BytesParser(policy=compat32).parsebytes(raw).get_payload()) == 1


def test_the_remembered_content_type_follows_every_change() -> None:
    """mimeskeleton._Part remembers its content type and boundary: each way a header or the
    default type changes must give the answer a plain Message gives after the same change.
    Mutants caught: set_raw or one of the changing methods not forgetting the boundary."""
    from email.message import Message

    from drain.mimeskeleton import _Part

    steps: list[tuple[str, tuple[object, ...]]] = [
        ("set_default_type", ("message/rfc822",)), ("set_raw", ("Content-Type", "text/html")),
        ("__delitem__", ("content-type",)), ("__setitem__", ("Content-Type", "multipart/mixed; boundary=x")),
        ("replace_header", ("Content-Type", "image/png")), ("set_type", ("text/x-one",)),
        ("__delitem__", ("content-type",)), ("add_header", ("Content-Type", "application/pdf")),
        ("set_param", ("charset", "utf-8")), ("del_param", ("charset",)), ("set_default_type", ("text/plain",)),
        ("__delitem__", ("content-type",)), ("set_default_type", ("message/rfc822",)),
        ("add_header", ("Content-Type", "multipart/alternative", )), ("set_boundary", ("b",)),
        ("set_param", ("boundary", "c")), ("del_param", ("boundary",)), ("set_boundary", ("d",)),
        ("set_raw", ("Content-Type", "multipart/mixed; boundary=first-wins")),
        ("__delitem__", ("content-type",)), ("set_raw", ("Content-Type", "multipart/mixed; boundary=e")),
        ("replace_header", ("Content-Type", "multipart/mixed; boundary*=''f")),
    ]
    part, plain = _Part(), Message()
    assert part.get_content_type() == plain.get_content_type() == "text/plain"
    for name, args in steps:
        getattr(part, name)(*args)
        getattr(plain, name)(*args)
        assert part.get_content_type() == plain.get_content_type(), name
        assert part.get_content_maintype() == plain.get_content_maintype(), name
        assert part.get_boundary() == plain.get_boundary(), name
        assert part.get_boundary("none") == plain.get_boundary("none"), name


def _walked_same(raw: bytes) -> bool:
    """drain.mimetree.walk gives the parser's tree for `raw` (any bytes, not only skeletons),
    or None; returns whether it gave one."""
    from drain.mimeskeleton import _Part
    from drain.mimetree import walk

    walked = walk(raw, _Part)
    if walked is None:
        return False
    full = BytesParser(_Part, policy=compat32).parsebytes(raw)
    assert _tree(walked) == _tree(full)
    assert [(k, str(v)) for k, v in walked.items()] == [(k, str(v)) for k, v in full.items()]
    assert walked.get_unixfrom() == full.get_unixfrom()
    return True


_WALK_LINES = st.sampled_from([
    "--b", "--b--", "--b \t", "--b--  ", "--bb", "--bx--", "--b---", "--", "---b", "--c", "--c--", "--c ",
    "Content-Type: multipart/mixed; boundary=b", "Content-Type: multipart/alternative; boundary=c",
    "Content-Type: multipart/related; boundary=\"c\"", "content-type: MULTIPART/mixed; boundary=b",
    "Content-Type: multipart/mixed", "Content-Type: text/plain", "Content-Type: multipart/mixed; boundary*=''b",
    "Content-Transfer-Encoding: base64", " folded; boundary=c", "\tboundary=b", "X-Header: value",
    "no colon here", ": no name", "From nobody", "From: someone@example.com", "", "", "", "text line", "x\ry",
    "\r--b", "\x0c--b", "--b\x0b", "caf\xe9: 8-bit", "Subject: caf\xe9",
])


@settings(max_examples=600, deadline=None)
@given(st.lists(_WALK_LINES, max_size=40), st.sampled_from([b"\n", b"\r\n", b"\r"]), st.booleans())
def test_walk_gives_the_parsers_tree(lines: list[str], eol: bytes, final_eol: bool) -> None:
    raw = eol.join(line.encode("latin-1") for line in lines) + (eol if final_eol else b"")
    _walked_same(raw)


def test_walk_takes_the_bench_messages_and_the_seeds() -> None:
    """The common mail goes the walk's way (not back to the parser), with the parser's tree."""
    raw = (b"From: a@example.com\nContent-Type: multipart/mixed; boundary=\"=_m\"\n\n--=_m\n"
           b"Content-Type: multipart/alternative; boundary=\"=_a\"\n\n--=_a\nContent-Type: text/plain\n\n"
           b"--=_a\nContent-Type: text/html\n\n--=_a--\n--=_m\nContent-Type: application/pdf\n\n--=_m--\n")
    assert _walked_same(raw) and _walked_same(raw.replace(b"\n", b"\r\n"))
    assert _walked_same(b"From: a@example.com\nSubject: hi\n\nbody\n")
    for kind in ("good", "bad"):
        for _name, seed_raw in seed(kind):
            _walked_same(_skeleton(seed_raw))


def test_walk_ends_parts_as_the_parser_does() -> None:
    """Repeated boundary lines make no parts; an outer boundary ends every part inside it."""
    head = ["From: a@example.com", "Content-Type: multipart/mixed; boundary=b", ""]
    repeated = [*head, "--b", "--b", "Content-Type: text/plain", "", "x", "--b", "", "--b--"]
    outer_ends_inner = [*head, "--b", "Content-Type: multipart/alternative; boundary=c", "", "--c",
                        "Content-Type: text/plain", "", "hi", "--b", "Content-Type: text/html", "", "--b--"]
    for lines in (repeated, outer_ends_inner):
        for eol in ("\n", "\r\n"):
            assert _walked_same(eol.join(lines).encode() + eol.encode())
