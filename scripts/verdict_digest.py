"""Verdicts and wire bytes of a corpus, as JSON, to compare two trees of drain: the seeds, the
bench's size-series messages, and variants of each (line endings changed; CR, LF, CRLF, NUL,
dots, "--" lines, 8-bit bytes and lines of 997-1,000 octets inserted at random places).

    cd <tree> && PYTHONPATH=$PWD:$PWD/scripts .venv/bin/python scripts/verdict_digest.py 1 > a.json
    cmp a.json b.json     # the same findings, wire form and DATA block for every variant

The argument seeds the random variants (the same seed gives the same corpus on any tree).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_sizes

from drain import validate
from drain.message import envelope_from_headers
from drain.worker.delivery import data_block, wire_form

ROOT = Path(__file__).resolve().parent.parent
PIECES = [b"\r", b"\n", b"\r\n", b"\n.", b"\r\n.", b".\r\n", b"\n--", b"\n--=_mix", b"\n--=_alt--\n", b"\x00",
          b"\n\n", b"\r\n\r\n", b"-", b".", b"a" * 997, b"a" * 998, b"a" * 999, b"b" * 1000, b"\xff", b"--", b"\t"]


def variants(raw: bytes, rng: random.Random) -> Iterator[bytes]:
    yield raw
    yield raw.replace(b"\n", b"\r\n")
    yield raw.replace(b"\r\n", b"\n")
    for _ in range(12):
        mutated = bytearray(raw if rng.random() < 0.5 else raw.replace(b"\n", b"\r\n"))
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, len(mutated))
            mutated[at:at] = rng.choice(PIECES)
        yield bytes(mutated)
    for n in (997, 998, 999, 1000):
        yield raw + b"x" * n
        yield raw + b"\n" + b"y" * n + b"\n"
        yield raw.replace(b"\n", b"\r\n") + b"y" * (n - 1) + b"\r\n"


def main() -> None:
    rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    seeds = sorted(p for d in ("seeds/good", "seeds/bad") for p in (ROOT / d).rglob("*") if p.is_file())
    corpus = [p.read_bytes() for p in seeds]
    corpus += [bench_sizes.message(i, size) for i in range(3) for size in (2048, 20480, 102400)]
    out = []
    for raw in corpus:
        for variant in variants(raw, rng):
            verdict = validate.check(variant, envelope_from_headers(variant))
            wire = wire_form(variant)
            out.append([hashlib.sha1(variant).hexdigest()[:12], [f.as_dict() for f in verdict.findings],
                        hashlib.sha1(wire).hexdigest()[:12], hashlib.sha1(data_block(wire)).hexdigest()[:12]])
    json.dump(out, sys.stdout)
    print(f"{len(out)} variants", file=sys.stderr)


if __name__ == "__main__":
    main()
