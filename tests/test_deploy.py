"""deploy/: the Prometheus rules pass promtool and their own unit tests, the rules and the
Grafana dashboard name only metrics drain exports, and the systemd units verify and stop
their commands cleanly by SIGTERM."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.observe import metrics

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "drain-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "drain-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "drain-dashboard.json"
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
# Suffixes Prometheus adds to a family's name for counters and histograms.
SUFFIXES = re.compile(r"_(total|bucket|sum|count|created)$")


def _tool(name: str, package: str) -> str:
    """The tool's path; skips without it, fails on CI (where .ci/run installs it)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it (.ci/run)")
        pytest.skip(message)
    return path


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def _dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return panels


def _dashboard_queries() -> list[str]:
    return [t["expr"] for p in _dashboard_panels() for t in p.get("targets", [])]


def _for_promtool(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced, so promtool can parse it."""
    return expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")


def metric_names(expr: str) -> set[str]:
    """drain metric families a PromQL expression names (histogram and counter suffixes removed)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return {SUFFIXES.sub("", name) for name in re.findall(r"\bdrain_[a-z0-9_]+", without_strings)}


# -- Prometheus ---------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check() -> None:
    promtool = _tool("promtool", "prometheus")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_alerts_fire_when_they_should_and_only_then() -> None:
    """deploy/prometheus/drain-alerts.test.yml: promtool's unit tests of every alert."""
    promtool = _tool("promtool", "prometheus")
    result = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            check=False, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == {r["alert"] for r in _rules()}  # every alert has a test


def test_the_alerts_the_operator_needs_are_there() -> None:
    assert {r["alert"] for r in _rules()} >= {
        "DrainBooksNotBalanced", "DrainOldestMailTooOld", "DrainQuarantineSpike", "DrainDeliveryStopped",
        "DrainCircuitOpen", "DrainIntakePaused", "DrainRedisDown"}
    for rule in _rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = _tool("promtool", "prometheus")
    recording = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": _for_promtool(q)} for i, q in enumerate(_dashboard_queries())]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(recording))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_renders_as_a_grid_of_the_panels_asked_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = _dashboard_panels()
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:  # no two panels overlap, none leaves the 24-column grid
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, p["title"]
        cells |= mine
        assert p["targets"] and p["datasource"]["uid"] == "${datasource}"
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    queries = " ".join(_dashboard_queries())
    for needed in ("drain_queue_depth", "drain_oldest_age_seconds", "drain_delivery_rate_per_second",
                   "drain_rate_limit_per_second", "drain_eta_seconds", "drain_quarantine_findings_total",
                   "histogram_quantile(0.99", "drain_delivery_latency_seconds_bucket", "drain_circuit_open",
                   "drain_domain_paused", "drain_redis_up"):
        assert needed in queries, needed


def test_metric_names_are_read_out_of_promql() -> None:
    expr = 'histogram_quantile(0.9, sum by (le) (rate(drain_delivery_latency_seconds_bucket[5m]))) ' \
           '/ drain_messages_total{event="drain_not_a_metric"}'
    assert metric_names(expr) == {"drain_delivery_latency_seconds", "drain_messages"}


def test_rules_and_dashboard_name_only_metrics_drain_exports(client: Client, relay: Sink, rclient: redis.Redis,
                                                             work: Any) -> None:
    # A state where every conditional series appears: mail delivered, a global rate, a paused domain.
    client.enqueue_many([synthetic(i) for i in range(5)])
    assert work()
    ratelimit.set_global(rclient, 100.0)
    ratelimit.pause_domain(rclient, "paused.example")
    exported = {family.name for family in metrics.registry(metrics.live(client.store)).collect()}
    assert "drain_queue_depth" in exported and "drain_rate_limit_per_second" in exported
    named: dict[str, set[str]] = {}
    for rule in _rules():
        named[f"alert {rule['alert']}"] = metric_names(rule["expr"])
    for panel in _dashboard_panels():
        named[f"panel {panel['title']}"] = set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
    unknown = {where: names - exported for where, names in named.items() if names - exported}
    assert not unknown, f"not exported by drain/metrics.py: {unknown}"
    assert all(named.values())  # every rule and panel names at least one drain metric


# -- systemd ------------------------------------------------------------------------------------


def _directives(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_units_exist_for_each_long_running_command() -> None:
    commands = {_directives(u)["ExecStart"][0].split()[1] for u in UNITS}
    assert commands == {"worker", "smtpd", "serve"}


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_is_hardened_and_stops_by_sigterm(unit: Path) -> None:
    d = _directives(unit)
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                       ("User", "drain"), ("KillSignal", "SIGTERM"), ("KillMode", "mixed"),
                       ("Restart", "on-failure"), ("EnvironmentFile", "/etc/drain/drain.env")):
        assert d.get(key) == [value], key
    assert d["ReadWritePaths"] == ["/var/lib/drain"] and d["StateDirectory"] == ["drain"]
    assert int(d["TimeoutStopSec"][0]) >= 10


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze", "systemd")
    # verify checks that ExecStart's program exists: point it at this checkout's drain.
    drain_bin = Path(sys.executable).parent / "drain"
    assert drain_bin.exists()
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/usr/local/bin/drain", str(drain_bin)))
        copies.append(str(copy))
    result = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    output = (result.stdout + result.stderr).splitlines()
    ours = [line for line in output if str(tmp_path) in line or ".service" in line]
    assert not ours, ours  # no warning about our units (unknown keys, unsafe settings)


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_command_stops_cleanly_on_sigterm_within_its_timeout(unit: Path, redis_server: int, relay: Sink,
                                                                  rclient: redis.Redis, tmp_path: Path) -> None:
    """What systemd does at `systemctl stop`: SIGTERM to the main process, then wait TimeoutStopSec."""
    d = _directives(unit)
    env = {**os.environ, "DRAIN_REDIS_URL": f"redis://127.0.0.1:{redis_server}/0", "DRAIN_RELAY": relay.url,
           "DRAIN_WORKER_PROCESSES": "2", "DRAIN_SERVE_LISTEN": f"127.0.0.1:{_free_port()}",
           "DRAIN_SMTPD_LISTEN": f"127.0.0.1:{_free_port()}", "DRAIN_LOG_FORMAT": "json"}
    # ${NAME} in ExecStart, as systemd expands it (one word each).
    argv = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word) for word in d["ExecStart"][0].split()[1:]]
    proc = subprocess.Popen([sys.executable, "-m", "drain", *argv], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        started = _wait_started(proc, argv[0])
        if argv[0] == "worker":  # idle, dequeuing: RQ's SIGTERM/SIGINT handlers are in place
            _wait_idle_workers(rclient, 2)
        if argv[0] == "serve":  # answering: its SIGTERM handler is in place
            with urllib.request.urlopen(f"http://{env['DRAIN_SERVE_LISTEN']}/healthz", timeout=30) as page:
                assert page.status == 200
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=int(d["TimeoutStopSec"][0]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(started) + (proc.stderr.read().decode() if proc.stderr else "")
    assert code == 0, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    # DRAIN_LOG_FORMAT=json: every line on stderr, start-up line included, is a JSON object.
    assert {json.loads(line)["component"] for line in err.splitlines()} == {argv[0]}


def _wait_idle_workers(client: redis.Redis, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [client.hget(key, "state") for key in client.scan_iter("rq:worker:*")]
        if states.count(b"idle") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} idle workers not seen in {timeout} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_started(proc: subprocess.Popen[bytes], command: str) -> list[str]:
    """Read stderr until the command says it runs (workers: RQ's 'Listening on' line from each
    of the pool's processes; one stopped while still starting dies by KeyboardInterrupt)."""
    marker = {"worker": "Listening on", "smtpd": "listening on", "serve": "/metrics"}[command]
    wanted = 2 if command == "worker" else 1
    assert proc.stderr is not None
    seen: list[str] = []
    while sum(marker in line for line in seen) < wanted:
        line = proc.stderr.readline().decode()
        if not line:
            raise AssertionError(f"drain {command} ended before it started: {''.join(seen)[-2000:]}")
        seen.append(line)
    return seen
