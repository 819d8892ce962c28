"""Logs: JSON lines with stable fields when DRAIN_LOG_FORMAT=json, text otherwise; no secrets."""

from __future__ import annotations

import io
import json
import logging

import pytest

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.logging_setup import configure, redact
from tests.chaos_kit import one_line
from tests.chaos_kit import run_drain as drain

HOSTILE = "evil\r\n{\"level\": \"ERROR\"}\x1b[31mred\x00"


@pytest.fixture
def restore_root() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def _emit(log_format: str, *args: object, **extra: object) -> str:
    stream = io.StringIO()
    configure(log_format, "worker", level=logging.DEBUG, stream=stream)
    logging.getLogger("drain.test").warning(*args, extra=extra or None)  # type: ignore[arg-type]
    return stream.getvalue()


def test_json_lines_have_the_stable_fields(restore_root: object) -> None:
    out = _emit("json", "message %s deferred: %s", "m-1", HOSTILE, message_id="m-1")
    lines = out.splitlines()
    assert len(lines) == 1  # hostile text cannot break the line
    record = json.loads(lines[0])
    assert {"time", "level", "component", "logger", "event", "message", "message_id"} <= set(record)
    assert record["level"] == "WARNING" and record["component"] == "worker" and record["message_id"] == "m-1"
    assert record["event"] == "message %s deferred: %s"  # the template: the same for every message
    assert record["message"].endswith(HOSTILE)  # kept, but escaped on the line
    assert "\x1b" not in out and "\x00" not in out and "\r" not in out
    assert record["time"].endswith("Z") and record["time"][10] == "T"


def test_json_without_a_message_id_leaves_the_field_out(restore_root: object) -> None:
    record = json.loads(_emit("json", "relay connection dropped"))
    assert "message_id" not in record


def test_url_passwords_are_redacted_in_both_formats(restore_root: object) -> None:
    url = "redis://:Hunter2-secret@db:6379/0 and smtps://mailer:p%40ss-secret@relay:465"
    assert "secret" not in redact(url) and redact(url).count("***") == 2
    for log_format in ("text", "json"):
        out = _emit(log_format, "connecting to %s", url)
        assert "secret" not in out and "***" in out


def test_text_is_the_default(restore_root: object) -> None:
    out = _emit("text", "hello %s", "there")
    assert "WARNING drain.test: hello there" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_worker_logs_json_lines(client: Client, relay: Sink, redis_server: int) -> None:
    client.enqueue_many([synthetic(i) for i in range(3)])
    env = {"DRAIN_REDIS_URL": f"redis://127.0.0.1:{redis_server}/0", "DRAIN_RELAY": relay.url,
           "DRAIN_LOG_FORMAT": "json"}
    result = drain(env, "worker", "--burst", "--log-level", "DEBUG")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    lines = result.stderr.decode().splitlines()
    assert lines
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert {r["component"] for r in records} == {"worker"}
    assert any(r["logger"].startswith("rq.") for r in records)  # RQ's own logs too
    assert client.store.books().delivered == 3


def test_a_bad_log_format_is_one_line_exit_2(redis_server: int) -> None:
    result = drain({"DRAIN_REDIS_URL": f"redis://127.0.0.1:{redis_server}/0", "DRAIN_LOG_FORMAT": "xml"},
                   "worker", "--burst")
    assert result.returncode == 2
    assert "DRAIN_LOG_FORMAT" in one_line(result)
