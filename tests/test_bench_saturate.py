"""`scripts/bench --only cells --saturate` (scripts/bench_saturate.py) at a small scale: the
simulated workers (drain's worker with the SMTP session swapped out) drain a real
redis-server, and the command-mix check tells their traffic from a worker's that writes its
journal on every delivery (DRAIN_SETTLE_EVERY=1 where the default is 3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_saturate  # noqa: E402

COUNT = 400


def drained(**env: str) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if k != "DRAIN_SETTLE_EVERY"}
    return bench_saturate.measured_drain(bench_saturate.simulated_command(1, 0.0003, lean=False),
                                         dict(base, DRAIN_RELAY=bench_saturate.NOWHERE, **env), COUNT, 2048, skip=0)


@pytest.mark.timeout(180)
def test_simulated_workers_drain_a_real_redis_and_the_mix_check_tells_a_different_journal_rhythm() -> None:
    row = drained()
    assert row["done"] == COUNT and row["measured_messages"] == COUNT
    assert row["redis_cpu_us_per_msg"] > 0 and row["msg_per_s_per_redis_core"] > 0
    # The worker's own traffic: one load (HGETALL) per message, the claim and settle scripts,
    # the journal written by the lanes; none of this process's polls.
    mix = row["mix"]
    assert 0.95 <= mix["hgetall"] <= 1.3 and mix["evalsha"] > 0 and 0 < mix["rpush"] < 0.9
    assert mix.get("hmget", 0) < 0.1 and "info" not in mix
    assert bench_saturate.mix_check(mix, dict(mix)) == (True, [])

    every = drained(DRAIN_REDIS_JOURNAL_EVERY="1")  # (Redis's journal every 3, the settle window, not 25)
    assert every["done"] == COUNT
    ok, problems = bench_saturate.mix_check(mix, every["mix"])
    assert not ok and any(p.startswith("rpush ") for p in problems), problems


def test_mix_check_weighs_the_total_and_each_major_command() -> None:
    real = {"hgetall": 1.0, "rpush": 0.6, "evalsha": 0.02, "hset": 0.05}
    assert bench_saturate.mix_check(real, {"hgetall": 1.05, "rpush": 0.62, "evalsha": 0.03, "hset": 0.04})[0]
    # A minor command off by half, the rest equal: within the total, not checked on its own.
    assert bench_saturate.mix_check(real, {**real, "hset": 0.025})[0]
    ok, problems = bench_saturate.mix_check(real, {**real, "hgetall": 1.3})
    assert not ok and problems[0].startswith("total ") and "hgetall 1.300/msg vs real 1.000" in problems
    # A command the real workers never send.
    ok, problems = bench_saturate.mix_check(real, {**real, "hgetall": 0.8, "get": 0.2})
    assert not ok and problems == ["get 0.200/msg vs real 0.000", "hgetall 0.800/msg vs real 1.000"]


def test_saturate_refuses_bad_levels() -> None:
    done = subprocess.run([sys.executable, "scripts/bench.py", "--only", "cells", "--saturate", "--levels", "2,x"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "--levels" in done.stderr and "Traceback" not in done.stderr
