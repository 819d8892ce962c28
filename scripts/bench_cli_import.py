"""What a `drain` call costs before it does anything: `import drain.cli` (python -X importtime,
cumulative microseconds of drain.cli) and `drain status --help` (CPU of the whole process, user +
system, and wall time), for two source trees run alternately in one sitting; medians.

    flock /work/wt/bench.lock nice -n 19 .venv/bin/python scripts/bench_cli_import.py \\
        --before ../main-tree --after . --runs 5

Each tree is put first on the path of the same interpreter (an editable install of either is
then shadowed), so both run with the same Python and libraries; one warm-up run of each first
(its bytecode compiled), not counted.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DRAIN = "from drain.cli import main; main()"


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree.resolve())}


def _run(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Python with `tree` first on its path (run from inside it too: `-c` puts the working
    directory ahead of PYTHONPATH)."""
    return subprocess.run([sys.executable, *args], env=_env(tree), cwd=tree.resolve(), capture_output=True,
                          text=True, check=True)


def import_us(tree: Path) -> int:
    """Cumulative import time of drain.cli, in microseconds (python -X importtime)."""
    done = _run(tree, "-X", "importtime", "-c", "import drain.cli")
    for line in done.stderr.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) == 3 and fields[2] == "drain.cli":
            return int(fields[1])
    raise RuntimeError(f"no drain.cli line in the import times of {tree}")


def help_cost(tree: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of `drain status --help`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    _run(tree, "-c", DRAIN, "status", "--help")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree of the old code")
    parser.add_argument("--after", type=Path, required=True, help="source tree of the new code")
    parser.add_argument("--runs", type=int, default=5, help="runs of each measure per tree")
    args = parser.parse_args()
    trees = {"before": args.before, "after": args.after}
    found: dict[str, dict[str, list[float]]] = {n: {"import_ms": [], "help_cpu_s": [], "help_wall_s": []}
                                                for n in trees}
    for tree in trees.values():
        import_us(tree)
        help_cost(tree)
    for _round in range(args.runs):
        for name, tree in trees.items():  # alternated: both see the same load on the box
            found[name]["import_ms"].append(import_us(tree) / 1000)
            cpu, wall = help_cost(tree)
            found[name]["help_cpu_s"].append(cpu)
            found[name]["help_wall_s"].append(wall)
    print(f"medians of {args.runs} runs each, alternated")
    print(f"{'':8} {'import drain.cli (ms)':>22} {'status --help CPU (s)':>22} {'status --help wall (s)':>23}")
    for name in trees:
        m = {k: statistics.median(v) for k, v in found[name].items()}
        print(f"{name:8} {m['import_ms']:22.1f} {m['help_cpu_s']:22.3f} {m['help_wall_s']:23.3f}")
    for key in ("import_ms", "help_cpu_s", "help_wall_s"):
        print(f"{key}: before {found['before'][key]}, after {found['after'][key]}")


if __name__ == "__main__":
    main()
