"""The admin scripts (scripts/backlog-report, scripts/quarantine-summary), run as an operator
would, against the test Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from drain.demo.seeding import synthetic
from drain.flow import ratelimit
from drain.intake.api import Client, Submission
from drain.settings import Settings
from drain.store import keys
from tests.conftest import seed

ROOT = Path(__file__).resolve().parent.parent


def script(settings: Settings, name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_CMD=f"{sys.executable} -m drain",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_backlog_report_writes_json_and_markdown(client: Client, settings: Settings, tmp_path: Path) -> None:
    ratelimit.pause(client.redis)
    client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@{'big' if i < 4 else 'small'}.example.com",))
                         for i in range(6)])
    result = script(settings, "backlog-report", "--top", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (report,) = (tmp_path / "reports").glob("backlog-*.json")
    assert len(report.stem) == len("backlog-YYYYmmdd-HHMM")
    doc = json.loads(report.read_text())
    assert set(doc) == {"generated_at", "generated_at_unix", "status", "backlog"}
    assert doc["status"]["accepted"] == 6 and doc["status"]["ready"] == 6
    assert [(d["domain"], d["total"]) for d in doc["backlog"]["domains"]] == [("big.example.com", 4),
                                                                           ("small.example.com", 2)]
    summary = report.with_suffix(".md").read_text()
    assert summary == result.stdout.split("\nwritten: ")[0]
    assert "queued: **6**" in summary and "books balance: yes" in summary
    assert "| big.example.com | 4 | 4 |" in summary and "small.example.com" not in summary  # --top 1

    explicit = script(settings, "backlog-report", "--out", str(tmp_path / "x" / "now.json"), cwd=tmp_path)
    assert explicit.returncode == 0, explicit.stderr
    assert (tmp_path / "x" / "now.json").exists() and (tmp_path / "x" / "now.md").exists()


def test_backlog_report_says_when_drain_fails(settings: Settings, tmp_path: Path) -> None:
    broken = settings.with_(redis_url="ftp://nowhere")
    result = script(broken, "backlog-report", cwd=tmp_path)
    assert result.returncode == 1
    assert "unsupported Redis URL scheme" in result.stderr and "drain status --json failed" in result.stderr
    assert not (tmp_path / "reports").exists()


def test_quarantine_summary_by_reason_sender_and_domain(client: Client, settings: Settings,
                                                        work: Callable[..., bool], tmp_path: Path) -> None:
    bad = dict(seed("bad"))
    nul = bad["body_nul-byte.eml"]
    ids = client.enqueue_many([
        Submission(nul, sender="spam|bot@bulk.example.com", recipients=("a@one.example.org",)),
        Submission(nul, sender="spam|bot@bulk.example.com", recipients=("b@one.example.org", "c@two.example.org")),
        Submission(bad["header_missing-from.eml"], sender="app@shop.example.net", recipients=("d@two.example.org",)),
        Submission(nul, sender="old@example.com", recipients=("e@three.example.org",)),
    ]).ids
    work()
    assert client.store.books().quarantined == 4
    client.redis.hset(keys.message(ids[3]), "qt", f"{time.time() - 3 * 86400:.3f}")  # held for three days

    result = script(settings, "quarantine-summary", "--json", "--hours", "24", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["held_in_all"] == 4 and doc["quarantined"] == 3
    assert doc["by_reason"]["body.nul-byte"] == 2 and doc["by_reason"]["header.missing-from"] == 1
    assert doc["top_senders"] == {"spam|bot@bulk.example.com": 2, "app@shop.example.net": 1}
    assert doc["top_recipient_domains"] == {"two.example.org": 2, "one.example.org": 2}

    markdown = script(settings, "quarantine-summary", "--hours", "100", "--top", "1",
                      "--out", str(tmp_path / "daily.md"), cwd=tmp_path)
    assert markdown.returncode == 0, markdown.stderr
    text = (tmp_path / "daily.md").read_text()
    assert text == markdown.stdout
    assert "4 message(s) quarantined in that time" in text
    assert "| body.nul-byte | 3 |" in text
    assert "| spam\\|bot@bulk.example.com | 2 |" in text  # a pipe in a sender cannot break the table
    assert "app@shop.example.net" not in text  # --top 1
