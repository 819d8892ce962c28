"""The per-byte steps of delivering one message, timed one by one in this process (no Redis,
no SMTP): what a worker does with a message's bytes between reading them from Redis and
writing them to the relay's socket, per size of the bench's size series.

Steps, each on the same message, best of --repeat timings of --number calls:
- unpack: drain.store.body.unpack of the stored form (body.pack: compressed or not, as the
  write side decides);
- validate (warm): drain.validate.check with the address caches warm (the per-byte part of
  validation plus the header checks), the same bytes again and again: the line-endings scan
  is remembered from the first call (drain.linescan.endings); validate (new bytes): the same,
  that scan forgotten before each call, as for every new message a worker reads; validate
  (cold): address caches cleared first, as for mail to a new recipient (its extra cost is
  email-validator and the header parser);
- of which line endings: drain.linescan.endings on bytes it has not seen;
- of which body lines: validate._long_body_line (the body line length check);
- of which MIME tree: drain.mimeskeleton.structure (skeleton and compat32 parse);
- without Bcc: drain.message.without_bcc;
- wire form: drain.worker.delivery.wire_form (LF to CRLF);
- DATA block: drain.worker.delivery.data_block (dot-stuffing, final CRLF and dot).

Each size is measured as generated (LF line endings, as files are) and in CRLF form (as
SMTP intake stores it). Run it on two trees with PYTHONPATH to compare them:

    PYTHONPATH=. .venv/bin/python scripts/profile_bytes.py --out /tmp/after.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_sizes

from drain import linescan, mimeskeleton, validate
from drain.message import envelope_from_headers, without_bcc
from drain.store import body
from drain.worker import delivery

# The clock of the timings: the wall clock, or with --cpu this thread's CPU time (on a shared
# box the wall clock counts other processes' turns too).
_TIMER: list[Callable[[], float]] = [time.perf_counter]


def _best(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat, timer=_TIMER[0])) / number * 1e6


def _forget() -> None:
    """Make linescan.endings scan again: it remembers the last message by identity, so the
    same bytes timed over and over would hide the scan that each new message pays for."""
    linescan._last = (b"", "lf")


def profile(raw: bytes, number: int, repeat: int) -> dict[str, float]:
    env = envelope_from_headers(raw)
    stored = body.pack(raw)
    split = raw.find(b"\n\n")
    start = split + 2 if split >= 0 else raw.find(b"\r\n\r\n") + 4
    wire = delivery.wire_form(raw)

    def cold() -> None:
        validate._valid_cached.cache_clear()
        validate._strict_parse_failure.cache_clear()
        validate.check(raw, env)

    clear = _best(lambda: (validate._valid_cached.cache_clear(), validate._strict_parse_failure.cache_clear()),
                  number, repeat)
    return {
        "unpack": _best(lambda: body.unpack(stored), number, repeat),
        "validate (warm)": _best(lambda: validate.check(raw, env), number, repeat),
        "validate (new bytes)": _best(lambda: (_forget(), validate.check(raw, env)), number, repeat),
        "of which line endings": _best(lambda: (_forget(), linescan.endings(raw)), number, repeat),
        "validate (cold)": _best(cold, number, repeat) - clear,
        "of which body lines": _best(lambda: list(validate._long_body_line(raw, start)), number, repeat),
        "of which MIME tree": _best(lambda: mimeskeleton.structure(raw, bare_cr=False), number, repeat),
        "without Bcc": _best(lambda: without_bcc(raw), number, repeat),
        "wire form": _best(lambda: delivery.wire_form(raw), number, repeat),
        "DATA block": _best(lambda: delivery.data_block(wire), number, repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2048,20480,102400", help="comma-separated sizes in bytes")
    parser.add_argument("--number", type=int, default=200, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=5, help="timings per step (the best is kept)")
    parser.add_argument("--cpu", action="store_true", help="time by this thread's CPU, not the wall clock")
    parser.add_argument("--out", help="write JSON here")
    args = parser.parse_args()
    if args.cpu:
        _TIMER[0] = time.thread_time
    results: list[dict[str, Any]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        lf = bench_sizes.message(1, size)
        for form, raw in (("LF", lf), ("CRLF", lf.replace(b"\n", b"\r\n"))):
            steps = profile(raw, args.number, args.repeat)
            results.append({"size": size, "label": bench_sizes.label(size), "form": form, "bytes": len(raw),
                            "us_per_msg": {k: round(v, 1) for k, v in steps.items()},
                            "us_per_kb": {k: round(v / (len(raw) / 1024), 2) for k, v in steps.items()}})
            print(f"{bench_sizes.label(size)} {form} ({len(raw):,} B): "
                  + ", ".join(f"{k} {v:,.1f}" for k, v in steps.items()), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
