"""A cell down, as the operator reads it: named, the others added up, and the cell's password
never shown, also when the URL carries it as redis-py's `?password=` query parameter."""

from __future__ import annotations

import json

from drain.settings import Settings
from tests.chaos_kit import RedisProc
from tests.test_cells import cells, csettings, drain

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
