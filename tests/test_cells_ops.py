"""Quarantine rules, quarantine export, circuit breakers, `drain log --follow` and `drain
drain` over three real redis-servers (cells): each works on every cell (they refused with
several cells before: exit 2, "not across cells"), adds up, and names a cell that is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.flow.breaker import Breakers
from drain.intake import rules
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from tests.chaos_kit import RedisProc
from tests.test_cells import books_of, cells, csettings, drain

__all__ = ["cells", "csettings"]  # fixtures of tests.test_cells, used here

SPAM = "spam.example.org"


def _clients(cells: list[RedisProc]) -> list[redis.Redis]:
    return [redis.Redis(port=p.port) for p in cells]


def test_quarantine_rules_go_to_every_cell_under_one_id_and_a_down_cell_gets_it_on_a_rerun(
        cells: list[RedisProc], csettings: Settings, tmp_path: Path) -> None:
    """Mutants caught: the old refusal (exit 2); cellops.rule_add letting each cell number the
    rule itself (c2, back, gets id 1 while the others hold 2) or not reusing an identical
    rule's id on a rerun (a second rule on c0 and c1); rule_rows reading one cell; export
    writing one cell's mail only."""
    api = Client.connect(csettings)
    api.enqueue_many([synthetic(i, domain=SPAM) for i in range(6)] + [synthetic(i) for i in range(6, 9)])
    clients = _clients(cells)
    first = drain(csettings, "quarantine", "rule", "add", "--domain", SPAM, "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["swept"] == 6 and doc["id"] == "1"
    assert [[r.id for r in rules.load(c)] for c in clients] == [["1"]] * 3
    # Exported from every cell, ids naming their cell.
    out = tmp_path / "eml"
    exported = drain(csettings, "quarantine", "export", "--reason", "rule.match", "--out", str(out), "--json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["exported"] == 6
    assert sorted(p.name.split(".")[0] for p in out.iterdir()) == ["c0", "c0", "c1", "c1", "c2", "c2"]
    # A cell down: the others get the rule, the cell is named, exit 1.
    cells[2].kill()
    second = drain(csettings, "quarantine", "rule", "add", "--sender", "*@bulk.example.net")
    assert second.returncode == 1 and b"c2" in second.stderr and len(second.stderr.splitlines()) == 1
    assert [[r.id for r in rules.load(c)] for c in clients[:2]] == [["1", "2"]] * 2
    listed = drain(csettings, "quarantine", "rule", "list", "--json")
    assert listed.returncode == 0 and b"c2" in listed.stderr
    assert [(r["id"], r["cells"]) for r in map(json.loads, listed.stdout.splitlines())] == [
        ("1", ["c0", "c1"]), ("2", ["c0", "c1"])]
    # Back: the same command again adds it to c2 alone, under the same id.
    cells[2].start()
    again = drain(csettings, "quarantine", "rule", "add", "--sender", "*@bulk.example.net")
    assert again.returncode == 0, again.stderr
    assert [[r.id for r in rules.load(c)] for c in _clients(cells)] == [["1", "2"]] * 3
    text = drain(csettings, "quarantine", "rule", "list").stdout.decode()
    assert "only on" not in text and text.count("\n") == 2
    removed = drain(csettings, "quarantine", "rule", "remove", "2")
    assert removed.returncode == 0, removed.stderr
    assert [[r.id for r in rules.load(c)] for c in _clients(cells)] == [["1"]] * 3
    assert drain(csettings, "quarantine", "rule", "remove", "7").returncode == 1
    # A rule added on one cell alone afterwards gets an id of its own.
    assert int(rules.add(_clients(cells)[0], "test", sender="x@example.net").id) > 2


def test_breakers_are_listed_over_cells_and_closed_on_every_cell(
        cells: list[RedisProc], csettings: Settings) -> None:
    """Mutants caught: the old refusal (exit 2); breaker_rows reading one cell (open_in
    [c0] only, failures not added); close_breaker closing it on the first cell only."""
    clients = _clients(cells)
    for client in clients[:2]:
        for _ in range(csettings.breaker_failures):
            Breakers(client, csettings).failure(SPAM)
    Breakers(clients[2], csettings).failure(SPAM)
    listed = drain(csettings, "breaker", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["breakers"]
    assert (row["domain"], row["open"], row["open_in"], row["trips"]) == (SPAM, True, ["c0", "c1"], 2)
    assert "OPEN (c0, c1)" in drain(csettings, "breaker", "list").stdout.decode()
    closed = drain(csettings, "breaker", "close", SPAM, "--note", "fixed")
    assert closed.returncode == 0, closed.stderr
    now = time.time()
    assert not any(st.get("open_until", 0) > now for c in clients for st in Breakers(c, csettings).states().values())
    assert drain(csettings, "breaker", "close", "never.example.com").returncode == 1


def test_log_follow_follows_every_cell(cells: list[RedisProc], csettings: Settings, relay: Sink) -> None:
    """Mutant caught: the old refusal (exit 2); cellops.follow reading the first cell only
    (no event of c1 or c2 ever comes)."""
    env = dict(os.environ, DRAIN_REDIS_URL=csettings.redis_url or "", DRAIN_RELAY=csettings.relay)
    proc = subprocess.Popen([sys.executable, "-m", "drain", "log", "--follow", "--json", "--count", "12"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    api = Client.connect(csettings)
    deadline = time.monotonic() + 60
    try:
        n = 0
        while proc.poll() is None:  # new mail on every cell until it has seen 12 events
            assert time.monotonic() < deadline, "drain log --follow did not see the cells' events"
            api.enqueue_many([synthetic(n + i) for i in range(3)])
            n += 3
            time.sleep(0.3)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    cells_seen = {json.loads(line)["id"].split(".")[0] for line in out.splitlines()}
    assert cells_seen == {"c0", "c1", "c2"}, out


def test_drain_session_drains_every_cell(cells: list[RedisProc], csettings: Settings, relay: Sink) -> None:
    """Mutant caught: the old refusal (exit 2); run_session without the cells (it drained
    the first cell only and waited for ever on the others' mail, or counted one cell)."""
    Client.connect(csettings).enqueue_many([synthetic(i) for i in range(9)])
    env = dict(os.environ, DRAIN_REDIS_URL=csettings.redis_url or "", DRAIN_RELAY=csettings.relay)
    done = subprocess.run([sys.executable, "-m", "drain", "drain", "--processes", "1", "--rate", "300/s"],
                          env=env, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    assert b"draining 9 queued messages at 300/s" in done.stdout and b"(3 cells)" in done.stdout
    for proc in cells:
        books = books_of(proc, csettings)
        assert books.delivered == 3 and books.balanced, books
        assert redis.Redis(port=proc.port).get(keys.RATE) == b"100.0"
    assert len(relay.messages) == 9


def test_closing_a_breaker_no_cell_has_says_so_and_a_down_cell_is_the_only_one_named(
        cells: list[RedisProc], csettings: Settings) -> None:
    """`breaker close never.example.com` over cells that all answered said "done on cells
    none; NOT on c0 (); c1 (); c2 ()": a cell's answer None ("no such breaker here") was
    taken for a cell that is down. Mutant caught: observe.cells.down/answered (or
    apply_all's "done on") telling down cells by a None value instead of an error."""
    unknown = drain(csettings, "breaker", "close", "never.example.com")
    assert unknown.returncode == 1 and unknown.stderr.decode().startswith("drain: error: no circuit breaker"), unknown
    Breakers(_clients(cells)[0], csettings).failure(SPAM)
    cells[2].kill()
    partial = drain(csettings, "breaker", "close", SPAM)
    err = partial.stderr.decode()
    assert partial.returncode == 1 and len(err.splitlines()) == 1, err
    assert "done on cells c0, c1; NOT on c2 (" in err and "c0 ()" not in err, err


def test_quarantine_export_and_delete_by_filter_with_a_cell_down_exit_1_and_a_rerun_finishes(
        cells: list[RedisProc], csettings: Settings, tmp_path: Path) -> None:
    """With a cell down, `quarantine export/delete/release --reason ...` acted on the cells
    that answered and exited 0 (a warning on standard error only): a script went on as if
    every cell's mail was exported or deleted. Mutant caught: _cells_missed not raising
    (or quarantine_select not passing `missed` on)."""
    Client.connect(csettings).enqueue_many([synthetic(i, domain=SPAM) for i in range(6)])
    assert drain(csettings, "quarantine", "rule", "add", "--domain", SPAM).returncode == 0
    cells[2].kill()
    out = tmp_path / "eml"
    exported = drain(csettings, "quarantine", "export", "--reason", "rule.match", "--out", str(out), "--json")
    assert exported.returncode == 1 and json.loads(exported.stdout)["exported"] == 4, exported
    assert b"cells c2 did not answer" in exported.stderr and b"Traceback" not in exported.stderr
    assert sorted(p.name.split(".")[0] for p in out.iterdir()) == ["c0", "c0", "c1", "c1"]
    deleted = drain(csettings, "quarantine", "delete", "--reason", "rule.match")
    assert deleted.returncode == 1 and b"deleted 4 message(s)" in deleted.stdout, deleted
    released = drain(csettings, "quarantine", "release", "--reason", "rule.match", "--json")
    assert released.returncode == 1 and json.loads(released.stdout)["released"] == 0, released
    cells[2].start()
    again = drain(csettings, "quarantine", "delete", "--reason", "rule.match")
    assert again.returncode == 0 and b"deleted 2 message(s)" in again.stdout, again
    assert [c.zcard(keys.QUARANTINE) for c in _clients(cells)] == [0, 0, 0]


def test_log_follow_over_cells_keeps_the_first_events_of_a_cell_that_had_none(client: Client) -> None:
    """`drain log --follow` over cells reads each cell in short rounds (one Reader.follow
    call each); a cell whose event stream was empty at the first round jumped to its newest
    event at the next round, so the events recorded in between (a cell's first mail) were
    never shown. Mutant caught: Reader.follow taking its starting point again while its
    last id is still 0-0 (without `following`)."""
    from drain.cli.cellops import _one_read
    from drain.trace import logview

    reader = logview.Reader(client.redis, client.settings.trace_retention_s)
    assert _one_read(reader, 50) == []
    first = client.enqueue(synthetic(0))
    second = client.enqueue(synthetic(1))
    assert [(d["event"], d["id"]) for d in _one_read(reader, 50)] == [("received", first), ("received", second)]
    third = client.enqueue(synthetic(2))
    assert [d["id"] for d in _one_read(reader, 50)] == [third]


def test_drain_session_with_a_cell_down_stops_before_changing_any_rate(
        cells: list[RedisProc], csettings: Settings, relay: Sink) -> None:
    """`drain drain --rate 300/s` with a cell down set the other cells' rate to their share
    (100/s, kept after the refusal) before finding the cell down, and said "done on cells
    c0, c1". Mutant caught: run_session setting the rate before reading the books."""
    Client.connect(csettings).enqueue_many([synthetic(i) for i in range(3)])
    cells[2].kill()
    env = dict(os.environ, DRAIN_REDIS_URL=csettings.redis_url or "", DRAIN_RELAY=csettings.relay)
    done = subprocess.run([sys.executable, "-m", "drain", "drain", "--processes", "1", "--rate", "300/s"],
                          env=env, capture_output=True, timeout=120, check=False)
    err = done.stderr.decode()
    assert done.returncode == 1 and len(err.splitlines()) == 1 and "c2" in err and "Traceback" not in err, err
    assert [c.get(keys.RATE) for c in _clients(cells)[:2]] == [None, None]
    assert not relay.messages
