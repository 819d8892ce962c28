"""`scripts/bench --only tenants` (scripts/bench_issue15.py) at a small scale: one run with
tenants, capped domains and a relay killed, and what it reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_tenants_bench_runs_one_pass_and_reports_every_row(tmp_path: Path) -> None:
    out = tmp_path / "issue15.json"
    done = subprocess.run([sys.executable, "scripts/bench.py", "--only", "tenants", "--messages", "1500",
                           "--rate", "500", "--runs", "with", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(out.read_text())["rows"][0]
    assert row["tenants"] is True and row["delivered_messages"] == 1500
    assert row["lost_recipients"] == 0 and row["duplicates"] == 0 and row["books"]["balanced"]
    assert row["several_domains"] == 450 and row["recipients_wanted"] > 1500
    assert sum(d["sends"] for d in row["per_capped_domain"].values()) == row["recipients_wanted"] - 1500
    assert row["cap_violations"] == 0 and row["small_p99_s_worst"] is not None
    # The primary relay was stopped mid-run and the fallback took the rest.
    assert row["relay_sends"]["primary"] > 0 and row["relay_sends"]["fallback"] > 0
    assert 0 <= row["first_fallback_after_kill_s"] < row["breaker_cooldown_s"]
    captured = "\n".join(row["captures"])
    assert "backlog by tenant" in captured and "big.example.com" in captured and "OPEN until" in captured
    text = out.with_suffix(".md").read_text()
    assert "| with tenants | 1,500 / 0 / 0 |" in text


def test_tenants_bench_refuses_a_bad_option() -> None:
    done = subprocess.run([sys.executable, "scripts/bench.py", "--only", "tenants", "--kill-at", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "--kill-at" in done.stderr and "Traceback" not in done.stderr
