"""The line scans of two trees of drain timed side by side in one process, alternating call by
call (so load on a shared machine falls on both alike): drain.linescan.endings on bytes it has
not seen, and lines_within over the body, on the size series' messages in LF and CRLF form.

    .venv/bin/python scripts/ab_scans.py /work/wt/base/drain/linescan.py drain/linescan.py
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sizes


def _load(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _time(call: object, rounds: int, number: int) -> list[float]:
    assert callable(call)
    times = []
    for _ in range(rounds):
        started = time.thread_time()
        for _ in range(number):
            call()
        times.append((time.thread_time() - started) / number * 1e6)
    return times


def main() -> None:
    before, after = _load(sys.argv[1], "linescan_before"), _load(sys.argv[2], "linescan_after")
    print("| message | scan | before µs (µs/KB), best | after µs (µs/KB), best | before/after, medians |")
    print("|---|---|---|---|---|")
    for size in bench_sizes.SIZES:
        lf = bench_sizes.message(5, size)
        for form, raw in (("LF", lf), ("CRLF", lf.replace(b"\n", b"\r\n"))):
            body = raw.find(b"\n\n") + 2 if form == "LF" else raw.find(b"\r\n\r\n") + 4
            kb = len(raw) / 1024
            for scan, make in (("endings (new bytes)", lambda m, r=raw: lambda: (setattr(m, "_last", (b"", "lf")),
                                                                                    m.endings(r))),
                               ("lines_within", lambda m, r=raw, b=body: lambda: m.lines_within(r, b, 998))):
                results: dict[str, list[float]] = {"before": [], "after": []}
                for _ in range(15):  # alternate the two in short rounds; keep each one's best
                    results["before"] += _time(make(before), 1, 200)
                    results["after"] += _time(make(after), 1, 200)
                cells = [f"{min(v):.1f} ({min(v) / kb:.2f})" for v in results.values()]
                spread = statistics.median(results["before"]) / statistics.median(results["after"])
                print(f"| {bench_sizes.label(size)} {form} | {scan} | {cells[0]} | {cells[1]} "
                      f"| {spread:.2f}x |")


if __name__ == "__main__":
    main()
