"""validate.check on the bench's messages, for an instruction count that the machine's load
does not move (valgrind's callgrind counts what the process executes):

    cd <tree> && for n in 0 5; do PYTHONHASHSEED=0 PYTHONPATH=$PWD:$PWD/scripts valgrind --tool=callgrind \\
        --callgrind-out-file=/dev/null .venv/bin/python \\
        /work/wt/s7-cpu/benchmarks/validate_instructions_2026-11-30.py SIZE $n 2>&1 | grep Collected; done
    # (collected with 5 rounds - collected with 0) / 100 = instructions per check

20 messages of SIZE (scripts/bench_sizes.py), each checked once to warm the address caches,
then N rounds of all 20.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path.cwd() / "scripts"))
import bench_sizes

from drain import validate
from drain.message import envelope_from_headers


def main() -> None:
    size, rounds = int(sys.argv[1]), int(sys.argv[2])
    raws = [bench_sizes.message(i, size) for i in range(20)]
    envelopes = [envelope_from_headers(raw) for raw in raws]
    for raw, envelope in zip(raws, envelopes, strict=True):
        validate.check(raw, envelope)
    for _ in range(rounds):
        for raw, envelope in zip(raws, envelopes, strict=True):
            validate.check(raw, envelope)


if __name__ == "__main__":
    main()
