"""Generated mail for validation tests: well-formed messages and MIME trees, and the same
messages with exactly one defect of a known reason code.

Everything is drawn from a `random.Random`, so hypothesis can drive it (`st.randoms()`,
which shrinks) and other tests can replay a fixed seed. A message is kept as a model
(header fields, a MIME tree, a line ending) until it is rendered, so a defect can be put
exactly where it belongs and nowhere else.
"""

from __future__ import annotations

import base64
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

# Body text never holds '-', so it can never look like a MIME boundary line.
_TEXT = string.ascii_letters + string.digits + " .,!?'"
_LABEL = string.ascii_lowercase + string.digits
_TLDS = ("com", "org", "net", "de", "io", "co.uk")
_SUBTYPES = ("mixed", "alternative", "related")


@dataclass
class Leaf:
    lines: list[str]
    ctype: str = "text/plain"


@dataclass
class Multi:
    subtype: str
    boundary: str | None
    children: list[Leaf | Multi]
    text: list[str] | None = None  # a body of plain lines instead of parts (boundary absent)


@dataclass
class Mail:
    headers: list[tuple[str, str]]
    body: Leaf | Multi
    eol: str = "\r\n"
    extra_head: list[bytes] = field(default_factory=list)  # raw lines put at a chosen place
    extra_at: int = 0

    def render(self) -> bytes:
        eol = self.eol.encode()
        lines = [f"{name}: {value}".encode() for name, value in self.headers]
        lines[self.extra_at:self.extra_at] = self.extra_head
        lines.extend(_part_headers(self.body))
        return eol.join(lines) + eol + eol + _render_body(self.body, eol)


def _part_headers(node: Leaf | Multi) -> list[bytes]:
    if isinstance(node, Leaf):
        return [b"MIME-Version: 1.0", f"Content-Type: {node.ctype}; charset=us-ascii".encode()]
    param = f'; boundary="{node.boundary}"' if node.boundary is not None else ""
    return [b"MIME-Version: 1.0", f"Content-Type: multipart/{node.subtype}{param}".encode()]


def _render_body(node: Leaf | Multi, eol: bytes) -> bytes:
    if isinstance(node, Leaf):
        return b"".join(line.encode("latin-1") + eol for line in node.lines)
    if node.text is not None:
        return b"".join(line.encode("latin-1") + eol for line in node.text)
    out = [b"This is a multi-part message." + eol]
    for child in node.children:
        boundary = (node.boundary or "").encode()
        head = _part_headers(child)[1:]  # no MIME-Version inside
        out.append(eol + b"--" + boundary + eol + eol.join(head) + eol + eol)
        out.append(_render_body(child, eol))
    out.append(eol + b"--" + (node.boundary or "").encode() + b"--" + eol)
    return b"".join(out)


def _word(rng: random.Random, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def address(rng: random.Random) -> str:
    local = rng.choice(string.ascii_lowercase) + _word(rng, _LABEL, 0, 10)
    if rng.random() < 0.3:
        local += "." + _word(rng, _LABEL, 1, 6)
    domain = ".".join(rng.choice(string.ascii_lowercase) + _word(rng, _LABEL, 0, 8)
                      for _ in range(rng.randint(1, 2)))
    return f"{local}@{domain}.{rng.choice(_TLDS)}"


def _mailbox(rng: random.Random) -> str:
    addr = address(rng)
    if rng.random() < 0.5:
        name = " ".join(_word(rng, string.ascii_letters, 1, 8) for _ in range(rng.randint(1, 3)))
        return f"{name} <{addr}>"
    return addr


def _leaf(rng: random.Random) -> Leaf:
    return Leaf([_word(rng, _TEXT, 0, 70).strip() for _ in range(rng.randint(1, 6))],
                rng.choice(("text/plain", "text/html", "application/octet-stream")))


def tree(rng: random.Random, depth: int = 0, counter: list[int] | None = None) -> Leaf | Multi:
    counter = counter if counter is not None else [0]
    if depth >= 3 or rng.random() < (0.45 if depth == 0 else 0.6):
        return _leaf(rng)
    counter[0] += 1
    boundary = f"=_part{counter[0]}_{_word(rng, _LABEL, 4, 12)}"
    children = [tree(rng, depth + 1, counter) for _ in range(rng.randint(1, 4))]
    return Multi(rng.choice(_SUBTYPES), boundary, children)


def well_formed(rng: random.Random) -> Mail:
    """A message every check passes: no finding at all, not even a recorded one."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    headers = [
        ("From", _mailbox(rng)),
        ("To", ", ".join(_mailbox(rng) for _ in range(rng.randint(1, 3)))),
        ("Subject", _word(rng, _TEXT, 0, 60).strip()),
        ("Date", format_datetime(start + timedelta(seconds=rng.randint(0, 10**8)))),
        ("Message-ID", f"<{_word(rng, _LABEL, 6, 20)}@{address(rng).split('@')[1]}>"),
    ]
    if rng.random() < 0.4:
        headers.append(("Cc", _mailbox(rng)))
    for i in range(rng.randint(0, 4)):
        value = _word(rng, _TEXT, 1, 40).strip() or "x"
        if rng.random() < 0.3:  # a folded field
            value += "\r\n\t" + (_word(rng, _TEXT, 1, 40).strip() or "y")
        headers.append((f"X-Extra-{i}", value))
    rng.shuffle(headers)
    mail = Mail(headers, tree(rng), rng.choice(("\r\n", "\n")))
    # Folds follow the message's line ending.
    mail.headers = [(n, v.replace("\r\n", mail.eol)) for n, v in mail.headers]
    return mail


# -- defects: each changes a well-formed message so that exactly one code is found ------------

def _leaves(node: Leaf | Multi) -> list[Leaf]:
    return [node] if isinstance(node, Leaf) else [leaf for c in node.children for leaf in _leaves(c)]


def _multis(node: Leaf | Multi) -> list[Multi]:
    if isinstance(node, Leaf):
        return []
    return [node, *(m for c in node.children for m in _multis(c))]


def _into_text(rng: random.Random, mail: Mail, piece: str) -> None:
    leaf = rng.choice(_leaves(mail.body))
    if not leaf.lines:
        leaf.lines.append("")
    i = rng.randrange(len(leaf.lines))
    line = leaf.lines[i]
    cut = rng.randint(0, len(line))
    leaf.lines[i] = line[:cut] + piece + line[cut:]


def _drop(mail: Mail, *names: str) -> None:
    mail.headers = [(n, v) for n, v in mail.headers if n not in names]


def _set(mail: Mail, name: str, value: str) -> None:
    mail.headers = [(n, value if n == name else v) for n, v in mail.headers]


def nul_byte(rng: random.Random, mail: Mail) -> None:
    _into_text(rng, mail, "\x00")


def bare_cr_lf(rng: random.Random, mail: Mail) -> None:
    # In a CRLF message a lone CR or LF; in an LF-only message (normal, converted) one CRLF.
    _into_text(rng, mail, rng.choice(("\r", "\n")) if mail.eol == "\r\n" else "\r\n")


def body_line_too_long(rng: random.Random, mail: Mail) -> None:
    _into_text(rng, mail, "b" * rng.randint(999, 1500))


def malformed(rng: random.Random, mail: Mail) -> None:
    if rng.random() < 0.5:
        mail.extra_head, mail.extra_at = [b"this line is not a field"], rng.randint(1, len(mail.headers))
    else:
        mail.extra_head, mail.extra_at = [b"\tcontinues nothing"], 0


def line_too_long(rng: random.Random, mail: Mail) -> None:
    mail.headers.insert(rng.randint(0, len(mail.headers)), ("X-Long", "a" * rng.randint(991, 1500)))


def too_many(rng: random.Random, mail: Mail) -> None:
    for i in range(500):
        mail.headers.append((f"X-Trace-{i}", str(i)))


def non_ascii(rng: random.Random, mail: Mail) -> None:
    mail.extra_head = [("X-Note: " + rng.choice(("café", "Grüße", "日本語", "naïve"))).encode()]
    mail.extra_at = rng.randint(0, len(mail.headers))


def missing_from(rng: random.Random, mail: Mail) -> None:
    _drop(mail, "From")


def duplicate(rng: random.Random, mail: Mail) -> None:
    name = rng.choice([n for n, _v in mail.headers if n.lower() in
                       {"from", "to", "cc", "subject", "date", "message-id"}])
    value = next(v for n, v in mail.headers if n == name)
    mail.headers.insert(rng.randint(0, len(mail.headers)), (name, value))


def missing_date(rng: random.Random, mail: Mail) -> None:
    _drop(mail, "Date")


def missing_message_id(rng: random.Random, mail: Mail) -> None:
    _drop(mail, "Message-ID")


def missing_boundary(rng: random.Random, mail: Mail) -> None:
    multis = _multis(mail.body)
    if multis:
        rng.choice(multis).boundary = None
    else:
        mail.body = Multi(rng.choice(_SUBTYPES), None, [mail.body])


def boundary_not_found(rng: random.Random, mail: Mail) -> None:
    # The declared boundary never appears in the body: the whole body is one text part.
    lines = ["There are no parts here."] + [line for leaf in _leaves(mail.body) for line in leaf.lines]
    mail.body = Multi(rng.choice(_SUBTYPES), "=_declared_but_absent", [], text=lines)


def nesting(rng: random.Random, mail: Mail) -> None:
    node = mail.body
    for i in range(50):
        node = Multi(rng.choice(_SUBTYPES), f"=_nest{i}", [node])
    mail.body = node


def too_many_parts(rng: random.Random, mail: Mail) -> None:
    mail.body = Multi("mixed", "=_many", [mail.body, *(Leaf([f"part {i}"]) for i in range(1000))])


def boundary_nested(rng: random.Random, mail: Mail) -> None:
    # A nested multipart whose boundary begins with its parent's (RFC 2046 5.1.1).
    outer = f"=_outer{rng.randint(0, 999)}"
    inner = outer + rng.choice(("-2", "==", "_x"))  # equal boundaries also break the parse: another code
    mail.body = Multi("mixed", outer, [Multi("alternative", inner, [Leaf(["seen by one parser"]),
                                                                    Leaf(["hidden from another"], "text/html")]),
                                       Leaf(["tail"])])


def invalid_sender(rng: random.Random, mail: Mail) -> None:
    local = address(rng).split("@")[0]
    bad = rng.choice((f"{local}@nodot", f"{local}..x@example.com", f"{local}@-bad-.com", f".{local}@example.com"))
    _set(mail, "From", bad)


def invalid_recipient(rng: random.Random, mail: Mail) -> None:
    local = address(rng).split("@")[0]
    bad = rng.choice((f"{local}@nodot", f"{local}..x@example.com", f"{local}@-bad-.com", f"{local}@host.invalid"))
    to = next(v for n, v in mail.headers if n == "To")
    _set(mail, "To", f"{to}, {bad}")


def no_recipient(rng: random.Random, mail: Mail) -> None:
    _drop(mail, "To", "Cc")


def parse_crash(rng: random.Random, mail: Mail) -> None:
    # Python 3.11's strict header parser raises on this display name.
    _set(mail, "From", f". <{address(rng)}>")


def encoded_newline(rng: random.Random, mail: Mail) -> None:
    # An RFC 2047 encoded-word whose text holds a line break (and a would-be header after it).
    text = rng.choice(("Evil\r\nBcc: x@evil.example", "Name\n", "\rX-Injected: 1", "a\r\n\r\nbody"))
    word = f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="
    name = rng.choice(("From", "To"))
    _set(mail, name, f"{word} <{address(rng)}>")


DEFECTS: dict[str, Callable[[random.Random, Mail], None]] = {
    "body.nul-byte": nul_byte,
    "body.bare-cr-lf": bare_cr_lf,
    "body.line-too-long": body_line_too_long,
    "header.malformed": malformed,
    "header.line-too-long": line_too_long,
    "header.too-many": too_many,
    "header.non-ascii-unencoded": non_ascii,
    "header.missing-from": missing_from,
    "header.duplicate-singleton": duplicate,
    "header.encoded-newline": encoded_newline,
    "header.missing-date": missing_date,
    "header.missing-message-id": missing_message_id,
    "mime.missing-boundary": missing_boundary,
    "mime.boundary-not-found": boundary_not_found,
    "mime.nesting-too-deep": nesting,
    "mime.too-many-parts": too_many_parts,
    "mime.boundary-nested": boundary_nested,
    "address.invalid-sender": invalid_sender,
    "address.invalid-recipient": invalid_recipient,
    "address.no-recipient": no_recipient,
    "parse.crash": parse_crash,
}


def with_defect(rng: random.Random, code: str) -> bytes:
    mail = well_formed(rng)
    DEFECTS[code](rng, mail)
    return mail.render()
