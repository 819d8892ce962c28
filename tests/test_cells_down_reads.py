"""Read-only commands over cells with one cell down: they show what the cells that answer
hold and name the one down, as `status`, `backlog`, `pause list` and `audit` do."""

from __future__ import annotations

import json

from drain.settings import Settings
from tests.chaos_kit import RedisProc
from tests.test_cells import cells, csettings, drain

__all__ = ["cells", "csettings"]  # fixtures of tests.test_cells, used here


def test_rate_show_and_route_list_show_the_cells_up_when_one_is_down(
        cells: list[RedisProc], csettings: Settings) -> None:
    """With one cell of three down, `drain rate show` and `drain route list` printed only
    "done on cells c0, c1; NOT on c2 ... run it again" (exit 1): in the incident an operator
    could not see any rate or route. Mutant caught: rate_shown/routes_of_each through
    apply_all (a write's all-or-say-so) instead of read_up."""
    assert drain(csettings, "rate", "set", "30/s").returncode == 0
    assert drain(csettings, "route", "set", "example.com", "smtp://127.0.0.1:2600").returncode == 0
    cells[2].kill()
    shown = drain(csettings, "rate", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert set(doc["cells"]) == {"c0", "c1"} and [d["cell"] for d in doc["cells_down"]] == ["c2"]
    assert doc["global"] == 20.0  # the two shares that answered (10/s each), and c2 named
    assert b"c2 is down" in shown.stderr and len(shown.stderr.splitlines()) == 1
    routes = drain(csettings, "route", "list", "--json")
    assert routes.returncode == 0, routes.stderr
    assert json.loads(routes.stdout)["routes"][0]["name"] == "example.com"
    assert b"c2 is down" in routes.stderr
    for proc in cells[:2]:
        proc.kill()
    none = drain(csettings, "rate", "show")
    assert none.returncode == 1 and b"no cell answered" in none.stderr and len(none.stderr.splitlines()) == 1
