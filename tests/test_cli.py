"""The `drain` command's contract, run as a real process against the test Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drain import ratelimit
from drain.api import Client
from drain.seeding import synthetic
from drain.settings import Settings
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



def in_process(settings: Settings, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
               *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`drain ARGS...` run by its entry point in this process (fast): (exit code, stdout, stderr)."""
    from drain.cli import main

    for name, value in {"DRAIN_REDIS_URL": settings.redis_url or "", **(env or {})}.items():
        monkeypatch.setenv(name, value)
    capfd.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        for name in env or {}:
            monkeypatch.delenv(name)
    out, err = capfd.readouterr()
    return code, out, err


def usage_error(found: tuple[int, str, str]) -> str:
    """The one-line error of a refused command (exit 2, no traceback)."""
    code, _out, err = found
    assert code == 2, (code, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_nan_and_inf_are_refused_by_settings_and_options(
        client: Client, settings: Settings, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [("DRAIN_DURABILITY_TIMEOUT", "nan"), ("DRAIN_LEASE_TTL", "inf"), ("DRAIN_BURST", "NaN"),
                        ("DRAIN_RELAY_TIMEOUT", "-inf"), ("DRAIN_RETRY_FIRST", "infinity")]:
        err = usage_error(in_process(settings, capfd, monkeypatch, "status", "--json", env={name: value}))
        assert name in err and "finite" in err
    for args in [("rate", "set", "5/s", "--burst", "nan"), ("rate", "set", "5/s", "--burst", "inf"),
                 ("status", "--watch", "nan"), ("rate", "set", "nan/s"), ("rate", "set", "inf")]:
        usage_error(in_process(settings, capfd, monkeypatch, *args))
    assert client.redis.get("drain:burst") is None and client.redis.get("drain:rate") is None
    # The same through a real process, for the case.
    result = drain(settings, "status", env={"DRAIN_DURABILITY_TIMEOUT": "nan"})
    assert result.returncode == 2 and len(result.stderr.decode().strip().splitlines()) == 1, result.stderr


def test_a_broken_redis_url_is_one_line(
        settings: Settings, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ["redis://[::1", "redis://[::1:6379/0", "ftp://x"]:
        assert "Redis URL" in usage_error(in_process(settings, capfd, monkeypatch, "status",
                                                     env={"DRAIN_REDIS_URL": url}))


def test_domain_names_are_validated_for_rate_and_pause(
        client: Client, settings: Settings, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ["", " ", "a b.example.com", "x\ny.example.com", "-x.example.com", "a..b", "[b]x.com", "x" * 300]:
        for args in [("rate", "set", "5/s", "--domain", bad), ("rate", "set", "0", "--domain", bad),
                     ("pause", "--domain", bad), ("resume", "--domain", bad)]:
            usage_error(in_process(settings, capfd, monkeypatch, *args))
    assert ratelimit.show(client.redis)["domains"] == {}
    code, _out, err = in_process(settings, capfd, monkeypatch, "rate", "set", "5/s", "--domain", "Bücher.Example.")
    assert code == 0, err
    assert list(ratelimit.show(client.redis)["domains"]) == ["bücher.example"]  # type: ignore[call-overload]


def test_a_session_or_demo_at_rate_zero_is_refused(
        client: Client, settings: Settings, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for args in [("drain", "--rate", "0"), ("drain", "--rate", "0/s"), ("demo", "--rate", "0")]:
        assert "hold" in usage_error(in_process(settings, capfd, monkeypatch, *args))
    assert client.redis.get("drain:rate") is None
