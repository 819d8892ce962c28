"""The benchmark's Postfix side and its size series (scripts/bench_postfix.py, scripts/bench_sizes.py).

The Postfix round trip runs a real throwaway Postfix instance and smtp-sink; it is skipped
where Postfix is not installed or the tests do not run as root.
"""

from __future__ import annotations

import base64
import email
import email.policy
import sys
from pathlib import Path

import pytest

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
