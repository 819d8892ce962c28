"""The benchmark's Postfix side and its size series (scripts/bench_postfix.py, scripts/bench_sizes.py).

The Postfix round trip runs a real throwaway Postfix instance and smtp-sink; it is skipped
where Postfix is not installed or the tests do not run as root.
"""

from __future__ import annotations

import base64
import email
import email.policy
import os
import sys
from pathlib import Path

import pytest
import redis

from drain import validate
from drain.message import envelope_from_headers
from tests.conftest import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_postfix
import bench_sizes


@pytest.mark.parametrize("size", bench_sizes.SIZES)
def test_size_series_messages_are_their_size_and_valid(size: int) -> None:
    for i in (0, 1, 997):
        raw = bench_sizes.message(i, size)
        assert abs(len(raw) - size) <= size * 0.05, (size, len(raw))
        verdict = validate.check(raw, envelope_from_headers(raw))
        assert verdict.ok, verdict.reasons
    assert bench_sizes.message(1, size) != bench_sizes.message(2, size)


def test_largest_size_carries_a_base64_attachment() -> None:
    raw = bench_sizes.message(3, 102400)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    attachments = [part for part in msg.walk() if part.get_content_disposition() == "attachment"]
    assert len(attachments) == 1
    assert attachments[0]["Content-Transfer-Encoding"] == "base64"
    payload = attachments[0].get_payload()
    assert len(base64.b64decode(payload, validate=False)) > 70_000


def test_missing_postfix_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(bench_postfix, "SBIN", ())
    why = bench_postfix.missing()
    assert why is not None and "not installed" in why and "apt-get install -y postfix" in why


@pytest.mark.skipif(bench_postfix.missing() is not None, reason=str(bench_postfix.missing()))
def test_postfix_instance_holds_then_releases_into_the_counting_sink(tmp_path: Path) -> None:
    sample = tmp_path / "m.eml"
    sample.write_bytes(bench_sizes.message(0, 2048))
    with bench_postfix.CountingSink() as sink, bench_postfix.PostfixInstance(sink.port) as postfix:
        root = postfix.root
        postfix.inject(25, 5, sample)
        assert postfix.held() == 25
        assert sink.count == 0  # held: nothing reached the sink
        postfix.release(sink, 25, timeout_s=30)  # without `postqueue -f` they would wait minutes
        assert sink.since() == 25
        # The sink counts a message at its 250; Postfix removes the queue file a moment later,
        # when its delivery agent reports back (one file was still there on a loaded machine).
        wait_for(lambda: postfix.queued() == 0, timeout=30, what="Postfix's queue to empty")
    assert not root.exists()


def test_peak_rss_finds_a_child_and_its_high_water_mark() -> None:
    import subprocess

    from peak_rss import PeakRss

    # A child that touches 40 MB, frees it, then waits: only the kernel's VmHWM still knows.
    code = "b = bytearray(40 * 1024 * 1024); del b; print('ready', flush=True); input()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        rss = PeakRss(lambda: [os.getpid()])
        rss.sample()
        summary = rss.summary()
    finally:
        child.communicate("\n", timeout=30)
    assert rss.peaks[child.pid][1] >= 40 * 1024 * 1024, rss.peaks
    assert summary["processes"] >= 2 and summary["sum_mb"] > 0, summary


def test_enqueue_bench_runs_and_reports(rclient: redis.Redis) -> None:
    import bench_enqueue

    rows = bench_enqueue.bench_enqueue(rclient, [2048], 50, rounds=2, cprofile=3, producers=(1, 2))
    assert [(r["name"], r["producers"]) for r in rows] == [
        ("Client.enqueue_many(raw bytes)", 1), ("Store.enqueue_many(envelopes given)", 1),
        ("Client.enqueue_many(raw bytes), 2 producer processes at once", 2)]
    assert all(r["msg_per_s"] > 0 and len(r["msg_per_s_each"]) == 2 for r in rows)
    assert rows[0]["main_thread_cpu_us"] > 0 and "main_thread_cpu_us" not in rows[2]
    text = bench_enqueue.enqueue_markdown(rows)
    assert "| 2 KB text | Client.enqueue_many(raw bytes) | 1 | 50 |" in text and "cProfile" in text
    assert "| 2 KB text | Client.enqueue_many(raw bytes), 2 producer processes at once | 2 | 50 |" in text


def test_ingress_report_gives_medians_and_the_ratio_of_one_run() -> None:
    import bench_ingress

    def row(name: str, round_no: int, rate: float) -> dict[str, object]:
        return {"part": "ingress", "name": name, "client": "smtp-source", "sessions": 20, "messages": 100,
                "msg_per_s": rate, "round": round_no, "load_average": 1.0,
                "peak_rss": {"processes": 1, "largest_mb": 50.0, "largest": "python", "sum_mb": 40.0}}

    rows = [row("drain smtpd --processes 2 -> Redis", n, rate) for n, rate in ((1, 100.0), (2, 200.0), (3, 900.0))]
    rows += [row("Postfix 3.7 smtpd -> its queue", n, rate) for n, rate in ((1, 50.0), (2, 100.0), (3, 100.0))]
    text = bench_ingress.ingress_markdown(rows)
    assert "| 200 [100, 200, 900] | 2.00x [2.00-9.00] | 50.0 (python) / 40.0 in 1 |" in text, text
