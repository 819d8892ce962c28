"""The `drain` command's contract, run as a real process against the test Redis."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import pytest

from drain.cli import TTY_ROWS, cli
from drain.demo.seeding import synthetic
from drain.flow import ratelimit
from drain.intake import rules
from drain.intake.api import Client, Submission
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
    client.redis.config_set("maxmemory", used + 2_000_000)  # room for one or two thousand, not six (stored compressed)
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
            client.redis.config_set("maxmemory", int(client.redis.info("memory")["used_memory"]) + 2_000_000)
    finally:
        client.redis.config_set("maxmemory", 0)


def test_every_command_and_option_has_help() -> None:
    missing: list[str] = []

    def walk(command: click.Command, path: str) -> None:
        if not (command.help or command.short_help):
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not param.help:
                missing.append(f"{path} {param.opts[0]}")
        if isinstance(command, click.Group):  # (drain's own commands are loaded when asked for)
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, f"{path} {name}"
                walk(sub, f"{path} {name}")
                seen.append(name)

    seen: list[str] = []
    walk(cli, "drain")
    assert missing == [] and {"status", "worker", "quarantine", "list", "rule"} <= set(seen), seen


def test_version_and_shell_completion(settings: Settings) -> None:
    version = drain(settings, "--version")
    assert version.returncode == 0 and version.stdout.decode().strip() == f"drain, version {metadata.version('drain')}"
    script = drain(settings, env={"_DRAIN_COMPLETE": "bash_source"})
    assert script.returncode == 0 and b"_DRAIN_COMPLETE=bash_complete" in script.stdout
    words = drain(settings, env={"_DRAIN_COMPLETE": "bash_complete", "COMP_WORDS": "drain quarantine ru",
                                 "COMP_CWORD": "2"})
    assert words.stdout.decode().split() == ["plain,rule"]


def test_json_on_commands_that_used_to_print_only_text(client: Client, settings: Settings, tmp_path: Path) -> None:
    def doc(*args: str) -> Any:
        result = drain(settings, *args, "--json")
        assert result.returncode == 0, (args, result.stderr)
        return json.loads(result.stdout)

    # pause's JSON gained "reason" and "until" (issue 14); the contract's fields stay the same.
    assert doc("pause") == {"scope": "delivery", "name": None, "paused": True, "reason": "", "until": None}
    assert doc("pause", "--domain", "Slow.Example.com") == {"scope": "domain", "name": "slow.example.com",
                                                             "paused": True, "reason": "", "until": None}
    assert doc("resume", "--intake") == {"scope": "intake", "name": None, "paused": False, "unparked": 0}
    assert doc("resume")["paused"] is False
    assert doc("rate", "set", "100/s", "--domain", "slow.example.com", "--concurrency", "3") == {
        "domain": "slow.example.com", "rate": 100.0, "concurrency": 3, "burst": None, "held": False}
    assert doc("rate", "set", "unlimited")["rate"] is None
    rule = doc("quarantine", "rule", "add", "--domain", "spam.example.com")
    msg_id = client.enqueue(synthetic(1), recipients=["u@spam.example.com"])
    assert doc("quarantine", "export", "--out", str(tmp_path / "eml"), msg_id) == {
        "exported": 1, "format": "eml", "out": str(tmp_path / "eml"), "ids": [msg_id]}
    assert doc("quarantine", "rule", "remove", rule["id"]) == {"id": rule["id"], "removed": True}
    assert set(doc("server", "status")) == {"running", "url"}


def _drain_on_a_terminal(settings: Settings, *args: str) -> str:
    """`drain ARGS` with its standard output on a pseudo-terminal 160 columns wide."""
    main, child = os.openpty()
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", COLUMNS="160", LINES="40", TERM="dumb")
    proc = subprocess.Popen([sys.executable, "-m", "drain", *args], stdin=subprocess.DEVNULL, stdout=child,
                            stderr=subprocess.PIPE, env=env)
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not select.select([main], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(main)
        proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else b""
    return b"".join(chunks).decode("utf-8", "replace")


def test_long_lists_stop_at_a_screenful_on_a_terminal(client: Client, settings: Settings) -> None:
    rules.add(client.redis, "tester", domain="caught.example.com")
    ids = client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@caught.example.com",))
                               for i in range(TTY_ROWS + 10)]).ids
    assert client.store.books().quarantined == len(ids)

    def rows(text: str) -> int:
        return sum(1 for msg_id in ids if f"│ {msg_id} " in text)

    screen = _drain_on_a_terminal(settings, "quarantine", "list")
    assert rows(screen) == TTY_ROWS and "first 50 shown; --limit N for more" in screen
    assert rows(_drain_on_a_terminal(settings, "quarantine", "list", "--limit", "0")) == len(ids)
    assert rows(_drain_on_a_terminal(settings, "quarantine", "list", "--limit", "7")) == 7
    piped = drain(settings, "quarantine", "list")
    assert rows(piped.stdout.decode()) == len(ids) and b"shown" not in piped.stdout

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
    # Kept in A-labels, the form the workers group recipients by (drain.message.domain_key).
    assert list(ratelimit.show(client.redis)["domains"]) == ["xn--bcher-kva.example"]  # type: ignore[call-overload]


def test_a_session_or_demo_at_rate_zero_is_refused(
        client: Client, settings: Settings, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for args in [("drain", "--rate", "0"), ("drain", "--rate", "0/s"), ("demo", "--rate", "0")]:
        assert "hold" in usage_error(in_process(settings, capfd, monkeypatch, *args))
    assert client.redis.get("drain:rate") is None
