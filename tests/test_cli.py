"""The `drain` command's contract, run as a real process against the test Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from drain.api import Client
from drain.seeding import synthetic
from drain.settings import Settings
from tests.chaos_kit import one_line
from tests.conftest import SEEDS

BOOK_KEYS = ["accepted", "ready", "deferred", "in_flight", "delivered", "bounced", "quarantined", "deleted"]


def drain(settings: Settings, *args: str, stdin: bytes | None = None,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    base = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=settings.relay)
    return subprocess.run([sys.executable, "-m", "drain", *args], input=stdin, capture_output=True,
                          env={**base, **(env or {})}, timeout=60, check=False)


def test_check_json_gives_a_verdict_per_file(settings: Settings) -> None:
    files = sorted(SEEDS.glob("*/*.eml"))
    result = drain(settings, "check", "--json", *map(str, files))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [line["path"] for line in lines] == [str(f) for f in files]
    for line, path in zip(lines, files, strict=True):
        assert set(line) >= {"path", "verdict", "reasons"}
        if path.parent.name == "good":
            assert line["verdict"] == "ok", line
        else:
            assert line["verdict"] == "quarantine"
            assert path.stem.replace("_", ".", 1) in line["reasons"]


def test_check_reads_stdin_and_survives_garbage(settings: Settings) -> None:
    result = drain(settings, "check", "--json", "-", stdin=bytes(range(256)) * 10)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verdict"] == "quarantine"


def test_enqueue_then_status_json(client: Client, settings: Settings, tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        p = tmp_path / f"m{i}.eml"
        p.write_bytes(synthetic(i))
        paths.append(str(p))
    result = drain(settings, "enqueue", "--json", *paths)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["accepted"] == 3 and doc["rejected"] == 0 and len(doc["ids"]) == 3

    status = drain(settings, "status", "--json")
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert list(st)[:8] == BOOK_KEYS
    assert {"oldest_age_s", "rate_per_s", "eta_s"} <= set(st)
    assert st["accepted"] == 3 and st["ready"] == 3
    assert st["accepted"] == sum(st[k] for k in BOOK_KEYS[1:])


def test_enqueue_mbox(client: Client, settings: Settings, tmp_path: Path) -> None:
    box = tmp_path / "in.mbox"
    box.write_bytes(b"".join(b"From sender@example.com Mon Nov 23 10:00:00 2026\n" + synthetic(i) + b"\n"
                             for i in range(4)))
    result = drain(settings, "enqueue", "--mbox", "--json", str(box))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accepted"] == 4
    assert client.store.books().ready == 4


def test_usage_errors_are_one_line_exit_2_and_queue_nothing(client: Client, settings: Settings,
                                                            tmp_path: Path) -> None:
    msg = tmp_path / "m.eml"
    msg.write_bytes(synthetic(1))
    cases = [
        ("enqueue", "--to", "not an address", str(msg)),
        ("enqueue", str(tmp_path / "missing.eml")),
        ("status", "--no-such-flag"),
        ("rate", "set", "fast"),
        ("worker", "--processes", "0"),
    ]
    for args in cases:
        result = drain(settings, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.decode().strip().splitlines()) == 1, (args, result.stderr)
        assert b"Traceback" not in result.stderr
        assert result.stdout == b""
    assert client.store.books().accepted == 0


def test_bad_redis_url_and_unreachable_redis(settings: Settings) -> None:
    for url in ("http://localhost:1", "redis://127.0.0.1:1/0"):
        result = drain(settings, "status", "--json", env={"DRAIN_REDIS_URL": url})
        assert result.returncode != 0
        err = result.stderr.decode().strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert result.stdout == b""


def test_rate_and_pause_commands(client: Client, settings: Settings) -> None:
    assert drain(settings, "rate", "set", "30000/m").returncode == 0
    shown = json.loads(drain(settings, "rate", "show", "--json").stdout)
    assert shown["global"] == 500.0
    assert drain(settings, "pause").returncode == 0
    assert json.loads(drain(settings, "rate", "show", "--json").stdout)["paused"] is True
    assert drain(settings, "resume").returncode == 0
    assert json.loads(drain(settings, "rate", "show", "--json").stdout)["paused"] is False


def _mbox_of(count: int, start: int = 0) -> bytes:
    return b"".join(b"From sender@example.com Mon Nov 23 10:00:00 2026\n" + synthetic(i) + b"\n"
                    for i in range(start, start + count))


def test_enqueue_checks_every_input_before_queueing(client: Client, settings: Settings, tmp_path: Path) -> None:
    box = tmp_path / "big.mbox"
    box.write_bytes(_mbox_of(1200))  # more than one transaction's worth
    binary = tmp_path / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 40)
    cases: list[tuple[tuple[str, ...], bytes | None, str]] = [
        (("--mbox", str(box), "-"), bytes(range(256)) * 40, "not an mbox file"),  # stdin is not an mbox
        (("--mbox", str(binary)), None, "not an mbox file"),
        (("--mbox", str(box), str(tmp_path)), None, "is a directory"),
        ((str(box), str(tmp_path / "missing.eml")), None, "no such file"),
        (("-", "-"), b"x", "only once"),
    ]
    for args, stdin, words in cases:
        result = drain(settings, "enqueue", *args, stdin=stdin)
        assert result.returncode == 2, (args, result.stderr)
        assert words in one_line(result), (args, result.stderr)
        assert result.stdout == b""
    assert client.store.books().accepted == 0

    piped = drain(settings, "enqueue", "--mbox", "--json", str(box), "-", stdin=_mbox_of(3, start=5000))
    assert piped.returncode == 0, piped.stderr
    doc = json.loads(piped.stdout)
    assert doc["accepted"] == 1203 and len(set(doc["ids"])) == 1203
    assert client.store.books().accepted == 1203


def test_enqueue_that_stops_part_way_reports_what_was_queued(client: Client, settings: Settings,
                                                              tmp_path: Path) -> None:
    box = tmp_path / "big.mbox"
    box.write_bytes(_mbox_of(6000))
    used = int(client.redis.info("memory")["used_memory"])
    client.redis.config_set("maxmemory", used + 4_000_000)  # room for one or two thousand, not six
    try:
        for mode in ((), ("--json",)):
            before = client.store.books().accepted
            result = drain(settings, "enqueue", "--mbox", *mode, str(box))
            queued = client.store.books().accepted - before
            assert result.returncode == 1, result.stderr
            err = one_line(result)
            assert f"stopped after queueing {queued} message(s)" in err and "maxmemory" in err, err
            assert "Billing" not in err  # no message text in the error
            if mode:
                doc = json.loads(result.stdout)
                assert doc["accepted"] == queued and "maxmemory" in doc["error"]
                ids = doc["ids"]
            else:
                ids = result.stdout.decode().split()
            assert len(ids) == queued and all(client.redis.exists(f"drain:msg:{i}") for i in ids)
            assert 0 < queued < 6000
            client.redis.config_set("maxmemory", int(client.redis.info("memory")["used_memory"]) + 4_000_000)
    finally:
        client.redis.config_set("maxmemory", 0)
