"""The message, action, pause, audit, route and tenant commands over three real
redis-servers (cells): none of them acts on or reads the first cell alone. Ids name their
cell, selectors run on every cell and add up, lists are merged with the cell named, and a
cell that is down is named with exit 1. Also DRAIN_EVENT_LOG=- in an operator command goes
to standard error, so that its --json output stays JSON."""

from __future__ import annotations

import json

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.ops import audit, tenants
from drain.settings import Settings
from drain.store import keys
from drain.store.store import Store
from drain.worker import routing
from tests.chaos_kit import RedisProc
from tests.test_cells import books_of, cells, csettings, drain, work_cell

__all__ = ["cells", "csettings"]  # fixtures of tests.test_cells, used here


def lines(out: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_trace_log_and_show_read_every_cell_with_ids_naming_their_cell(
        cells: list[RedisProc], csettings: Settings, relay: Sink) -> None:
    """Mutant caught: trace.py reading obj.client.redis (the first cell) for trace/log/show:
    only c0's two messages are traced and logged, and c2's id is unknown to show."""
    ids = Client.connect(csettings).enqueue_many([synthetic(i) for i in range(6)]).ids
    for proc in cells:
        work_cell(proc, csettings)
    traced = lines(drain(csettings, "trace", "--json").stdout)
    assert sorted(d["id"] for d in traced) == sorted(ids)
    assert all(d["state"] == "delivered" for d in traced)
    one = drain(csettings, "trace", "--id", ids[2], "--json")
    assert [d["id"] for d in lines(one.stdout)] == [ids[2]], one.stderr
    logged = lines(drain(csettings, "log", "--json").stdout)
    assert {str(d["id"]) for d in logged} == set(ids)
    times = [float(str(d["time"])) for d in logged]
    assert times == sorted(times)
    shown = drain(csettings, "show", ids[2], "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert (doc["id"], doc["state"]) == (ids[2], "delivered") and ids[2].startswith("c2.")
    assert drain(csettings, "show", ids[2].split(".")[1]).returncode == 2  # no cell named


def test_actions_send_ids_to_their_cell_run_selectors_on_every_cell_and_name_a_down_cell(
        cells: list[RedisProc], csettings: Settings) -> None:
    """Mutants caught: actions.py running on obj.client.store (dry-run counts 3, not 9; the
    c1 id is unknown to c0); cellcmds.act dropping the cells down (exit 0 with c2 down)."""
    ids = Client.connect(csettings).enqueue_many([synthetic(i) for i in range(9)]).ids
    dry = json.loads(drain(csettings, "hold", "--all", "--dry-run", "--json").stdout)
    assert dry["matched"] == 9 and sorted(dry["ids"]) == sorted(ids)
    c1_id = next(i for i in ids if i.startswith("c1."))
    held = drain(csettings, "hold", c1_id, "--json")
    assert held.returncode == 0, held.stderr
    assert json.loads(held.stdout)["ids"] == [c1_id]
    assert redis.Redis(port=cells[1].port).zcard(keys.QUARANTINE) == 1
    cells[2].kill()
    deleted = drain(csettings, "delete", "--all", "--json")
    assert deleted.returncode == 1
    assert b"c2" in deleted.stderr and len(deleted.stderr.splitlines()) == 1
    doc = json.loads(deleted.stdout)
    assert doc["moved"] == 6 and [d["cell"] for d in doc["cells_down"]] == ["c2"]
    for proc in cells[:2]:
        books = books_of(proc, csettings)
        assert books.deleted == 3 and books.balanced


def test_pause_list_and_audit_merge_every_cell_with_the_cell_named(
        cells: list[RedisProc], csettings: Settings) -> None:
    """Mutant caught: pause list through on_each without a combine (the first cell's rows
    only), audit reading obj.client.redis (c0's records only)."""
    assert drain(csettings, "pause", "--domain", "example.com", "--reason", "migration").returncode == 0
    rows = json.loads(drain(csettings, "pause", "list", "--json").stdout)
    assert sorted((r["cell"], r["scope"], r["name"]) for r in rows) == [
        ("c0", "domain", "example.com"), ("c1", "domain", "example.com"), ("c2", "domain", "example.com")]
    text = drain(csettings, "pause", "list").stdout.decode()
    assert "c2: domain example.com" in text
    audit.write(redis.Redis(port=cells[1].port), "note", "ops", "only on c1")
    entries = lines(drain(csettings, "audit", "--json").stdout)
    assert {str(e["cell"]) for e in entries} == {"c0", "c1", "c2"}
    assert [e["cell"] for e in entries if e["action"] == "note"] == ["c1"]
    times = [float(str(e["time"])) for e in entries]
    assert times == sorted(times)


def test_routes_are_set_on_every_cell_and_a_disagreement_is_said(
        cells: list[RedisProc], csettings: Settings) -> None:
    """Mutants caught: route set/delete on obj.client.redis (c1, c2 have no route);
    route list not comparing the cells (cells_agree stays true, nothing on stderr)."""
    assert drain(csettings, "route", "set", "example.com", "smtp://127.0.0.1:2525").returncode == 0
    clients = [redis.Redis(port=p.port) for p in cells]
    assert [[r.name for r in routing.load(c)] for c in clients] == [["example.com"]] * 3
    listed = drain(csettings, "route", "list", "--json")
    assert json.loads(listed.stdout)["cells_agree"] is True and listed.stderr == b""
    routing.delete_route(clients[1], "domain", "example.com")
    listed = drain(csettings, "route", "list", "--json")
    assert json.loads(listed.stdout)["cells_agree"] is False
    assert b"differ" in listed.stderr and b"c1" in listed.stderr
    assert drain(csettings, "route", "delete", "example.com").returncode == 0
    assert [routing.load(c) for c in clients] == [[], [], []]
    assert drain(csettings, "route", "concurrency", "smtp://127.0.0.1:2525", "6").returncode == 0
    assert [c.hvals(keys.RELAY_CONCURRENCY) for c in clients] == [[b"2"]] * 3


def test_tenants_are_set_on_every_cell_with_rates_shared_and_listed_added_up(
        cells: list[RedisProc], csettings: Settings) -> None:
    """Mutants caught: tenant list / backlog --by tenant reading the first cell (queued 3,
    not 9); rate set --tenant giving every cell the whole rate (30, not 10);
    tenant set on obj.client.store (c1, c2 keep weight 1); pause --tenant through on_each
    (a tenant unknown to c1 and c2 is taken for a cell down: exit 1)."""
    Client.connect(csettings).enqueue_many([synthetic(i) for i in range(9)], tenant="acme")
    listed = json.loads(drain(csettings, "tenant", "list", "--json").stdout)
    assert [(r["tenant"], r["queued"]) for r in listed] == [("acme", 9)]
    assert json.loads(drain(csettings, "backlog", "--by", "tenant", "--json").stdout)["total"] == 9
    assert drain(csettings, "rate", "set", "30/s", "--tenant", "acme").returncode == 0
    assert drain(csettings, "tenant", "set", "acme", "--weight", "3", "--concurrency", "4").returncode == 0
    for proc in cells:
        row = tenants.listing(Store(redis.Redis(port=proc.port), csettings))[0]
        assert (row["rate"], row["weight"], row["concurrency"]) == (10.0, 3, 2)
    listed = json.loads(drain(csettings, "tenant", "list", "--json").stdout)
    assert (listed[0]["rate"], listed[0]["weight"], listed[0]["concurrency"]) == (30.0, 3, 6)
    # A tenant whose mail is in one cell only: set (and paused) where it is known.
    assert Client.connect(csettings).enqueue(synthetic(99), tenant="solo").startswith("c0.")
    paused = drain(csettings, "pause", "--tenant", "solo")
    assert paused.returncode == 0, paused.stderr
    assert [r["paused"] for r in json.loads(drain(csettings, "tenant", "list", "--json").stdout)] == [False, True]
    unknown = drain(csettings, "tenant", "set", "nobody", "--weight", "2")
    assert unknown.returncode == 2 and b"unknown tenant" in unknown.stderr


def test_event_log_dash_goes_to_stderr_in_operator_commands(
        cells: list[RedisProc], csettings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutant caught: eventlog.write_span writing `-` to stdout in every process: the
    --json answer of `drain hold` is then mixed with event lines and is not one document."""
    Client.connect(csettings).enqueue_many([synthetic(i) for i in range(3)])
    monkeypatch.setenv("DRAIN_EVENT_LOG", "-")
    held = drain(csettings, "hold", "--all", "--json")
    assert held.returncode == 0, held.stderr
    assert json.loads(held.stdout)["moved"] == 3
    events = [json.loads(line) for line in held.stderr.splitlines() if line.startswith(b"{")]
    assert len(events) == 3 and all("event" in e for e in events)
