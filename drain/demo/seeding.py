"""Sample backlogs built from seeds/ (hand-written good and malformed mail) or synthesised.

Used by `drain demo`, the benchmark and the tests.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

from drain.errors import ConfigError
from drain.intake.api import Submission

DOMAINS = (
    "example.com", "example.net", "example.org", "mail.example.com", "lists.example.org",
    "shop.example.net", "corp.example.com", "news.example.org", "eu.example.net", "us.example.com",
)
_MESSAGE_ID = re.compile(rb"(?im)^Message-ID:[^\n]*\n")


def seeds_dir() -> Path:
    """The repository's seeds/ folder (drain is run from a checkout or an editable install)."""
    return Path(__file__).resolve().parents[2] / "seeds"


def load(kind: str, root: Path | None = None) -> list[tuple[str, bytes]]:
    folder = (root or seeds_dir()) / kind
    files = sorted(folder.glob("*.eml"))
    if not files:
        raise ConfigError(f"no seed messages in {folder}")
    return [(p.name, p.read_bytes()) for p in files]


def with_message_id(raw: bytes, message_id: str) -> bytes:
    header = f"Message-ID: {message_id}\n".encode()
    replaced, count = _MESSAGE_ID.subn(header.replace(b"\\", b"\\\\"), raw, count=1)
    return replaced if count else header + raw


def synthetic(index: int, size: int = 2048, domain: str | None = None) -> bytes:
    """An ordinary text/plain message of about `size` bytes."""
    domain = domain or DOMAINS[index % len(DOMAINS)]
    head = (
        f"From: Billing <billing@sender.example.com>\n"
        f"To: Customer {index} <user{index}@{domain}>\n"
        f"Subject: Your statement no. {index}\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\n"
        f"Message-ID: <synthetic-{index}@sender.example.com>\n"
        f"MIME-Version: 1.0\n"
        f"Content-Type: text/plain; charset=us-ascii\n\n"
    ).encode()
    line = b"Thank you for your business. This line pads the message body to size.\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


def backlog(count: int, malformed_share: float = 0.03, seed: int = 7, root: Path | None = None,
            tag: str = "demo") -> Iterator[Submission]:
    """`count` messages: seeds/good with fresh Message-IDs and varied recipients, and a share of seeds/bad."""
    rng = random.Random(seed)
    good = load("good", root)
    bad = load("bad", root)
    for i in range(count):
        if rng.random() < malformed_share:
            yield Submission(bad[i % len(bad)][1])
            continue
        raw = with_message_id(good[i % len(good)][1], f"<{tag}-{i}@drain.example.com>")
        domain = DOMAINS[rng.randrange(len(DOMAINS))]
        yield Submission(raw, sender="sender@drain.example.com", recipients=(f"user{i}@{domain}",))
