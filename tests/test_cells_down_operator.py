"""A cell down, as the operator reads it: named, the others added up, and the cell's password
never shown, also when the URL carries it as redis-py's `?password=` query parameter."""

from __future__ import annotations

import json
import urllib.request

from drain.observe.http import StatusServer
from drain.settings import Settings
from tests.chaos_kit import RedisProc
from tests.test_cells import cells, csettings, drain
from tests.test_cli import drain as drain_in

__all__ = ["cells", "csettings"]  # fixtures of tests.test_cells, used here


def test_a_down_cell_with_a_password_in_its_query_is_named_without_the_password(
        cells: list[RedisProc], csettings: Settings) -> None:
    """`drain status --json` put the down cell's URL in cells_down as given, "?password=s3cret"
    and all (redacted() hid only user:password@). Mutant caught: redacted() without the
    query-parameter step."""
    secret_url = cells[2].url + "?password=s3cret"
    settings = csettings.with_(redis_url=",".join([cells[0].url, cells[1].url, secret_url]))
    cells[2].kill()
    shown = drain(settings, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert [d["cell"] for d in doc["cells_down"]] == ["c2"]
    assert doc["cells_down"][0]["url"].endswith("?password=***")
    assert [c["cell"] for c in doc["cells"]] == ["c0", "c1"]
    for command in (["status", "--json"], ["status"], ["backlog"], ["quarantine", "list"], ["log"]):
        run = drain(settings, *command)
        assert b"s3cret" not in run.stdout + run.stderr, command
        assert b"Traceback" not in run.stderr, command


def test_trace_and_show_of_an_id_in_a_down_cell_name_the_cell(cells: list[RedisProc], csettings: Settings) -> None:
    """`drain trace --id c2.1` and `drain show c2.1` with c2 down said only "drain: error: Redis:
    Error 111 connecting to 127.0.0.1:PORT": which of the cells was down the operator had to
    work out from the port. Mutant caught: cellcmds.trace/show without _cell_named."""
    mbox = b"".join(b"From a@src.example\nFrom: a@src.example\nTo: u%d@dest.example\nSubject: s\n"
                    b"Message-ID: <%d@src.example>\n\nhi\n\n" % (n, n) for n in range(6))
    ids = drain_in(csettings, "enqueue", "--mbox", "-", stdin=mbox).stdout.decode().split()
    down = next(i for i in ids if i.startswith("c2."))
    up = next(i for i in ids if not i.startswith("c2."))
    cells[2].kill()
    for args in (["trace", "--id", down], ["show", down], ["show", down, "--json"]):
        run = drain(csettings, *args)
        assert run.returncode == 1 and run.stdout == b"", args
        assert run.stderr.startswith(b"drain: error: cell c2 is down, " + down.encode()), run.stderr
        assert len(run.stderr.splitlines()) == 1
    assert drain(csettings, "show", up).returncode == 0  # the others still answer


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return bytes(answer.read())


def test_the_status_page_with_a_cell_down_says_so_and_gives_no_eta(cells: list[RedisProc],
                                                                  csettings: Settings) -> None:
    """With c2 down and nothing queued on c0 and c1, the page's pill said "All clear", its ETA
    card "done", /status.json eta_s 0 and /metrics drain_eta_seconds 0: c2's mail, unknown, was
    as good as delivered. Mutants caught: add_snapshots without _without_down (JSON, metrics, ETA
    card); _header without its cell-down pill."""
    cells[2].kill()
    server = StatusServer(csettings.redis_url or "", csettings, "127.0.0.1", 0, refresh_s=0.1)
    server.start()
    try:
        assert server.snapshots.refreshed.wait(20)
        page = _get(server.url).decode()
        assert "All clear" not in page and "Cell c2 down" in page
        assert "cell c2 down: its mail not counted" in page  # the ETA card says why it has no figure
        doc = json.loads(_get(server.url + "status.json"))
        assert doc["status"]["eta_s"] is None and "c2" in doc["status"]["held_by"]["*"]
        assert b"drain_eta_seconds " not in _get(server.url + "metrics")
    finally:
        server.stop()


def test_drain_status_with_a_cell_down_gives_no_eta_but_why(cells: list[RedisProc], csettings: Settings) -> None:
    """`drain status --json` with c2 down and nothing queued on c0 and c1 said eta_s 0 (done)
    with held_by {}. Mutant caught: add_status without its `down` step."""
    cells[2].kill()
    shown = drain(csettings, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["eta_s"] is None and doc["held_by"]["*"] == "cell c2 down: its mail not counted"
    text = drain(csettings, "status")
    assert text.returncode == 0 and b"cell c2 down: its mail not counted" in text.stdout
    backlog = drain(csettings, "backlog", "--json")  # `drain backlog` agrees (it said eta_s 0.0)
    assert backlog.returncode == 0 and b"cell c2 is down" in backlog.stderr
    shape = json.loads(backlog.stdout)
    assert shape["eta_s"] is None and shape["held_by"]["*"] == "cell c2 down: its mail not counted"
