"""Cells: drain over three real redis-servers. Mail is spread over the cells, ids name their
cell, the commands add up across cells and name a cell that is down, and a cell that is
killed stops only its own share: the others keep taking and delivering, and its mail moves
again once it is back (appendfsync always: nothing acknowledged is lost)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.errors import ConfigError, RedisUnavailable
from drain.flow import ratelimit
from drain.intake.api import CellsClient, Client
from drain.settings import Settings
from drain.store import keys
from drain.store.books import Books
from drain.store.cells import Cell, cells_of, parse_id, split_urls
from drain.store.store import Store
from drain.worker.rqworker import DrainWorker
from tests.chaos_kit import RedisProc
from tests.conftest import SEEDS


@pytest.fixture
def cells(tmp_path: Path) -> Iterator[list[RedisProc]]:
    procs = [RedisProc(tmp_path / f"cell{i}").start() for i in range(3)]
    yield procs
    for proc in procs:
        proc.stop()


@pytest.fixture
def csettings(cells: list[RedisProc], relay: Sink) -> Settings:
    return Settings(redis_url=",".join(p.url for p in cells), relay=relay.url, relay_timeout_s=5.0,
                    batch_size=20, settle_every=5, lease_ttl_s=1.0)


def books_of(proc: RedisProc, settings: Settings) -> Books:
    return Store(redis.Redis(port=proc.port), settings).books()


def work_cell(proc: RedisProc, settings: Settings) -> None:
    """A burst worker on one cell, in this process (as `drain worker --cell cN --burst` runs)."""
    client = redis.Redis(port=proc.port)
    DrainWorker(["drain"], connection=client, drain_settings=settings.with_(redis_url=proc.url),
                housekeeping=False).work(burst=True, logging_level="WARNING")
    client.close()


def drain(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=settings.relay)
    return subprocess.run([sys.executable, "-m", "drain", *args], capture_output=True, env=env, timeout=120,
                          check=False)


def test_urls_split_into_cells_and_sentinel_host_lists_stay_whole() -> None:
    text = "redis://a:6379/0, redis+sentinel://s1:26379,s2:26379/mymaster/0 rediss://b:6380/1"
    assert split_urls(text) == ["redis://a:6379/0", "redis+sentinel://s1:26379,s2:26379/mymaster/0",
                                "rediss://b:6380/1"]
    assert [c.name for c in cells_of(Settings(redis_url=text))] == ["c0", "c1", "c2"]
    assert split_urls("redis://one:1/0") == ["redis://one:1/0"]
    with pytest.raises(ConfigError, match="same Redis twice"):
        cells_of(Settings(redis_url="redis://a:1/0,redis://a:1/0"))
    listed = [Cell("c0", "redis://a"), Cell("c1", "redis://b")]
    assert parse_id("c1.2f", listed) == (listed[1], "2f")
    for bad in ("2f", "c7.2f", "c1.", "c1-2f"):
        with pytest.raises(ConfigError, match="does not name a cell"):
            parse_id(bad, listed)


def test_mail_is_spread_evenly_and_every_cell_delivers_its_share(
        cells: list[RedisProc], csettings: Settings, relay: Sink) -> None:
    api = Client.connect(csettings)
    assert isinstance(api, CellsClient)
    ids = [*api.enqueue_many([synthetic(i) for i in range(30)]).ids, api.enqueue(synthetic(30))]
    assert [i.split(".")[0] for i in ids[:6]] == ["c0", "c1", "c2", "c0", "c1", "c2"]
    assert [books_of(p, csettings).accepted for p in cells] == [11, 10, 10]
    assert api.status().books.accepted == 31  # the API's status adds the cells up
    for proc in cells:
        work_cell(proc, csettings)
    assert len(relay.messages) == 31
    assert all(books_of(p, csettings).balanced for p in cells)
    status = json.loads(drain(csettings, "status", "--json").stdout)
    assert (status["accepted"], status["delivered"], status["cells_down"]) == (31, 31, [])
    assert [(c["cell"], c["delivered"]) for c in status["cells"]] == [("c0", 11), ("c1", 10), ("c2", 10)]


def test_a_killed_cell_is_routed_around_and_its_mail_moves_once_it_returns(
        cells: list[RedisProc], csettings: Settings, relay: Sink) -> None:
    api = Client.connect(csettings)
    before = api.enqueue_many([synthetic(i) for i in range(30)]).ids
    cells[1].kill()
    after = api.enqueue_many([synthetic(100 + i) for i in range(30)]).ids  # no error: c1 is skipped
    assert not any(i.startswith("c1.") for i in after) and len(after) == 30
    # The group that found c1 down was spread over the cells left: an even split already.
    assert sorted(Counter(i.split(".")[0] for i in after).items()) == [("c0", 15), ("c2", 15)]
    # Once c1 is known down, its share is spread over the cells left, evenly.
    spread = api.enqueue_many([synthetic(200 + i) for i in range(30)]).ids
    assert sorted(Counter(i.split(".")[0] for i in spread).items()) == [("c0", 15), ("c2", 15)]
    after += spread
    one_by_one = [api.enqueue(synthetic(300 + i)) for i in range(6)]  # the turn passes over c1
    assert sorted(Counter(i.split(".")[0] for i in one_by_one).items()) == [("c0", 3), ("c2", 3)]
    after += one_by_one
    for proc in (cells[0], cells[2]):
        work_cell(proc, csettings)
    assert len(relay.messages) == 86  # the other cells' mail, before and after the kill
    status = drain(csettings, "status", "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert [d["cell"] for d in doc["cells_down"]] == ["c1"] and doc["delivered"] == 86
    cells[1].start()
    work_cell(cells[1], csettings)
    got = sorted(m.message_id for m in relay.messages)
    assert len(got) == 96 and len(set(got)) == 96  # 0 lost, none twice
    assert len(before) + len(after) == 96
    per_cell = [books_of(p, csettings) for p in cells]
    assert all(b.balanced for b in per_cell) and sum(b.delivered for b in per_cell) == 96


def test_no_cell_answering_is_one_clear_error(cells: list[RedisProc], csettings: Settings) -> None:
    api = Client.connect(csettings)
    for proc in cells:
        proc.kill()
    with pytest.raises(RedisUnavailable, match=r"no cell can take mail now .*c0 down.*c1 down.*c2 down"):
        api.enqueue(synthetic(1))
    result = drain(csettings, "pause")
    assert result.returncode == 1 and b"NOT on c0" in result.stderr and b"Traceback" not in result.stderr


def test_writes_reach_every_cell_and_a_down_cell_is_named(cells: list[RedisProc], csettings: Settings) -> None:
    assert drain(csettings, "rate", "set", "600/s").returncode == 0
    assert [ratelimit.get_global(redis.Redis(port=p.port)) for p in cells] == [200.0, 200.0, 200.0]
    shown = json.loads(drain(csettings, "rate", "show", "--json").stdout)
    assert shown["global"] == 600.0
    assert drain(csettings, "rate", "set", "90/s", "--domain", "example.com").returncode == 0
    shown = json.loads(drain(csettings, "rate", "show", "--json").stdout)
    assert shown["domains"]["example.com"]["rate"] == 90.0
    cells[2].kill()
    result = drain(csettings, "pause")
    assert result.returncode == 1
    assert b"done on cells c0, c1; NOT on c2" in result.stderr
    assert [ratelimit.is_paused(redis.Redis(port=p.port)) for p in cells[:2]] == [True, True]


def test_quarantine_ids_name_their_cell(cells: list[RedisProc], csettings: Settings) -> None:
    api = Client.connect(csettings)
    bad = sorted((SEEDS / "bad").glob("*.eml"))[:6]
    api.enqueue_many([p.read_bytes() for p in bad])
    for proc in cells:
        work_cell(proc, csettings)
    listed = [json.loads(line) for line in drain(csettings, "quarantine", "list", "--json").stdout.splitlines()]
    assert len(listed) == 6 and {row["id"].split(".")[0] for row in listed} == {"c0", "c1", "c2"}
    one = next(row["id"] for row in listed if row["id"].startswith("c2."))
    shown = drain(csettings, "quarantine", "show", one, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == one
    assert drain(csettings, "quarantine", "show", one.split(".")[1]).returncode == 2  # no cell named
    deleted = json.loads(drain(csettings, "quarantine", "delete", one, "--json").stdout)
    assert deleted["deleted"] == 1
    c2 = books_of(cells[2], csettings)
    assert c2.deleted == 1 and c2.balanced
    assert redis.Redis(port=cells[2].port).zcard(keys.QUARANTINE) == 1


def test_drain_worker_runs_a_group_per_cell(cells: list[RedisProc], csettings: Settings, relay: Sink) -> None:
    api = Client.connect(csettings)
    api.enqueue_many([synthetic(i) for i in range(12)])
    result = drain(csettings, "worker", "--burst", "--log-level", "WARNING")
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(relay.messages) == 12
    assert [books_of(p, csettings).delivered for p in cells] == [4, 4, 4]
    assert drain(csettings, "worker", "--cell", "c9").returncode == 2


def test_smtp_ingress_spreads_over_cells_and_routes_around_a_dead_one(
        cells: list[RedisProc], csettings: Settings) -> None:
    from drain.intake.smtpd import AuthGuard, Ingress
    from tests.test_ingress import BOTH, connect, queued_id, submit

    server = Ingress(Client.connect(csettings), "127.0.0.1", 0, features=BOTH, recheck_s=0.0,
                     hostname="drain.test", guard=AuthGuard(delay_s=0.01)).start()
    try:
        with connect(server) as smtp:
            first = [queued_id(submit(smtp, synthetic(i))[1]) for i in range(6)]
            cells[0].kill()  # the cell next in turn, and the one read first for the intake pause
            later = [submit(smtp, synthetic(10 + i)) for i in range(4)]
    finally:
        server.stop()
    assert sorted(i.split(".")[0] for i in first) == ["c0", "c0", "c1", "c1", "c2", "c2"]
    assert [code for code, _reply in later] == [250] * 4
    assert not any(queued_id(reply).startswith("c0.") for _code, reply in later)
    assert sum(books_of(p, csettings).accepted for p in cells[1:]) == 8


def test_sums_across_cells() -> None:
    from drain.observe.backlog import DomainShape, Shape
    from drain.observe.cells import add_shapes, add_status
    from drain.observe.status import Status

    def st(accepted: int, rate: float, eta: float | None, oldest: float) -> Status:
        return Status(Books(accepted, accepted, 0, 0, 0, 0, 0, 0), oldest, rate, eta, deferred_by={"rate": 1})

    total = add_status([st(3, 10.0, 5.0, 1.0), st(4, 20.0, 9.0, 7.0)])
    assert (total.books.accepted, total.rate_per_s, total.eta_s, total.oldest_age_s) == (7, 30.0, 9.0, 7.0)
    assert total.books.balanced and total.deferred_by["rate"] == 2
    assert add_status([st(3, 10.0, None, 1.0), st(4, 20.0, 9.0, 7.0)]).eta_s is None
    one = Shape([DomainShape("a.example", 2, [2] + [0] * 9, 4.0)], 2, 4.0)
    two = Shape([DomainShape("a.example", 3, [1, 2] + [0] * 8, 6.0), DomainShape("b.example", 9, [9] + [0] * 9, 1.0)],
                12, 6.0)
    merged = add_shapes([one, two])
    assert [(d.domain, d.total, d.by_age[:2], d.eta_s) for d in merged.domains] == [
        ("b.example", 9, [9, 0], 1.0), ("a.example", 5, [3, 2], 6.0)]
    assert (merged.total, merged.eta_s) == (14, 6.0)


def test_status_page_json_and_metrics_add_up_cells_and_name_the_one_down(
        cells: list[RedisProc], csettings: Settings) -> None:
    from drain.observe.http import StatusServer
    from tests.conftest import wait_for
    from tests.test_web import fetch

    api = Client.connect(csettings)
    api.enqueue_many([synthetic(i) for i in range(9)])
    api.enqueue_many([synthetic(i) for i in range(3)], tenant="acme")
    server = StatusServer(csettings.redis_url or "", csettings, "127.0.0.1", 0, refresh_s=0.1)
    server.start()
    try:
        assert server.snapshots.refreshed.wait(10)
        doc = fetch(server.url + "status.json").json()
        assert doc["status"]["accepted"] == 12 and [c["ready"] for c in doc["cells"]] == [4, 4, 4]
        # Tenants and relays add up over the cells too (they were left out of the sums).
        assert doc["status"]["tenants"] == [{"tenant": "sender.example.com", "queued": 9},
                                            {"tenant": "acme", "queued": 3}], doc["status"]["tenants"]
        assert doc["status"]["tenants_queued"] == 2 and "(relay)" in doc["status"]["relays"]
        assert 'drain_tenant_backlog_messages{tenant="acme"} 3.0' in fetch(server.url + "metrics").text
        cells[1].kill()

        def c1_down() -> bool:
            return [c["up"] for c in fetch(server.url + "status.json").json()["cells"]] == [True, False, True]

        wait_for(c1_down, what="the page to see c1 down")
        doc = fetch(server.url + "status.json").json()
        assert doc["redis"]["up"] and doc["status"]["accepted"] == 8
        assert str(cells[1].port) not in json.dumps(doc["cells"])  # no address on the page
        metrics = fetch(server.url + "metrics").text
        assert 'drain_cell_up{cell="c1"} 0.0' in metrics and 'drain_cell_up{cell="c0"} 1.0' in metrics
        assert 'drain_cell_queue_depth{cell="c2",state="ready"} 4.0' in metrics
        page = fetch(server.url).text
        assert "c1</td><td class=\"no\">DOWN" in page
    finally:
        server.stop()


def test_every_cells_password_is_hidden() -> None:
    from drain.store.connection import redacted

    shown = redacted("redis://:first@a:1/0,redis+sentinel://u:second@s1:2,s2:3/m/0 rediss://x:third@b/0")
    assert "first" not in shown and "second" not in shown and "third" not in shown
    assert shown.count("***") == 3 and "s2:3/m/0" in shown


def test_deferred_list_spans_cells(
        cells: list[RedisProc], csettings: Settings, relay: Sink) -> None:
    api = Client.connect(csettings)
    api.enqueue_many([synthetic(i) for i in range(6)])
    relay.set_policy(data_policy=lambda _i, _m: "451 4.3.0 try again later")
    for proc in cells:
        work_cell(proc, csettings)
    listed = drain(csettings, "deferred", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(r["id"].split(".")[0] for r in rows) == ["c0", "c0", "c1", "c1", "c2", "c2"]
    assert [r["next_attempt_at"] for r in rows] == sorted(r["next_attempt_at"] for r in rows)
    # (breakers, rules, export: tests/test_cells_ops.py; none refuses over cells now)


def test_a_full_cell_is_skipped_and_all_full_is_queue_full(cells: list[RedisProc], csettings: Settings) -> None:
    from drain.errors import QueueFull

    settings = csettings.with_(max_memory_fraction=0.5)

    def fill(proc: RedisProc) -> None:  # memory use now is over half of maxmemory: intake closes
        client = redis.Redis(port=proc.port)
        client.config_set("maxmemory", int(int(client.info("memory")["used_memory"]) * 1.2))

    fill(cells[0])
    api = Client.connect(settings)
    ids = api.enqueue_many([synthetic(i) for i in range(30)]).ids
    assert sorted(Counter(i.split(".")[0] for i in ids).items()) == [("c1", 15), ("c2", 15)]
    fill(cells[1])
    fill(cells[2])
    with pytest.raises(QueueFull, match="every cell is nearly full"):
        Client.connect(settings).enqueue(synthetic(99))
    assert sum(books_of(p, csettings).accepted for p in cells) == 30


def test_drain_worker_passes_sigterm_to_every_cells_group(cells: list[RedisProc], csettings: Settings) -> None:
    import signal

    from tests.conftest import wait_for

    env = dict(os.environ, DRAIN_REDIS_URL=csettings.redis_url or "", DRAIN_RELAY=csettings.relay)
    proc = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--log-level", "WARNING"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clients = [redis.Redis(port=p.port) for p in cells]
    try:
        def idle(c: redis.Redis) -> bool:  # waiting for work: RQ's signal handlers are in place by then
            return any(c.hget(key, "state") == b"idle" for key in c.smembers("rq:workers"))

        wait_for(lambda: all(idle(c) for c in clients), timeout=60, what="a worker per cell, idle")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        # Every group stopped the gentle way: each RQ worker took its name off the register.
        wait_for(lambda: all(c.scard("rq:workers") == 0 for c in clients), timeout=30, what="workers gone")
    finally:
        if proc.poll() is None:
            proc.kill()
        for c in clients:  # a group left running (a failed run) is stopped by its pid
            for key in c.smembers("rq:workers"):
                pid = c.hget(key, "pid")
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)


def test_durability_a_cell_cannot_give_fails_before_anything_is_written(
        cells: list[RedisProc], csettings: Settings) -> None:
    from drain.settings import parse_durability

    redis.Redis(port=cells[0].port).config_set("appendfsync", "everysec")  # no fsync per write there
    api = Client.connect(csettings.with_(durability=parse_durability("fsync")))
    with pytest.raises(ConfigError, match="DRAIN_DURABILITY=fsync"):
        api.enqueue(synthetic(1))  # c0's turn
    assert books_of(cells[0], csettings).accepted == 0
