"""One-off driver (benchmarks note 2026-11-30): the size series of scripts/bench_sizes.py
(from branch postfixbench) without postfixbench's bench.py.

Usage, from the tree to measure: python sizes_run_2026-11-30.py COUNT OUT.json [SIZES]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path.cwd() / "scripts"))
import bench_postfix
import bench_sizes
from bench import redis_server


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, **row: Any) -> None:
        self.rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)


def main() -> None:
    count, out = int(sys.argv[1]), Path(sys.argv[2])
    sizes = [int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "2048,20480,102400").split(",")]
    report = Report()
    with redis_server() as client:
        bench_sizes.bench_sizes(report, client, count, [2], sizes)
    text = (f"Postfix {bench_postfix.version()}; {time.strftime('%Y-%m-%d %H:%M')}\n\n"
            + bench_sizes.sizes_markdown(report.rows))
    print(text)
    out.write_text(json.dumps(report.rows, indent=2))
    out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
