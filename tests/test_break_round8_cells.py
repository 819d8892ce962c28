"""Round 8's breaks of several Redis cells (see tests/test_break_round8.py): cells listed in
another order by two processes, one Redis listed twice under two spellings. Each docstring
says what happened before the fix and the mutant it catches."""

from __future__ import annotations

import json

import pytest
import redis

from drain.errors import ConfigError
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from tests.chaos_kit import RedisProc
from tests.test_cells import cells, csettings
from tests.test_cli import drain

__all__ = ["cells", "csettings"]  # fixtures of tests.test_cells, used here

MAIL = b"From: a@src.example\r\nTo: b@dst.example\r\nSubject: one\r\n\r\nhi\r\n"


def _accepted(procs: list[RedisProc]) -> list[int]:
    return [int(redis.Redis(port=p.port).hget(keys.BOOKS, "accepted") or 0) for p in procs]


def test_cells_listed_in_another_order_are_refused(cells: list[RedisProc], csettings: Settings) -> None:
    """Two operators with the cells in another order: `drain show c0.1` showed one a message of
    the first Redis and the other a message of the third, and `drain delete c0.1` deleted
    whichever its list named: ids named other messages. The first command to use a Redis as a
    cell names it (drain:cell); a list naming it otherwise is a usage error, one line, and
    nothing is queued or changed. Mutant caught: the check_name calls in Context.client removed."""
    queued = drain(csettings, "enqueue", "--json", "-", stdin=MAIL)
    assert queued.returncode == 0, queued.stderr
    [msg_id] = json.loads(queued.stdout)["ids"]
    before = _accepted(cells)
    other = csettings.with_(redis_url=",".join(p.url for p in reversed(cells)))
    for args in (("show", msg_id), ("delete", msg_id), ("enqueue", "-"), ("status",)):
        result = drain(other, *args, stdin=MAIL)
        err = result.stderr.decode()
        assert result.returncode == 2 and len(err.splitlines()) == 1, (args, err)
        assert "same order everywhere" in err and "Traceback" not in err
    assert _accepted(cells) == before
    assert drain(csettings, "show", msg_id).returncode == 0  # the first order still works


def test_one_redis_listed_twice_under_two_spellings_is_refused(cells: list[RedisProc], csettings: Settings) -> None:
    """DRAIN_REDIS_URL=redis://127.0.0.1:P/0,redis://localhost:P/0 (one Redis, two spellings)
    passed the "same Redis twice" check: `drain status` counted every message twice and c0.1
    and c1.1 were the same message. Mutant caught: check_name comparing nothing (the GET of
    the name dropped)."""
    port = cells[0].port
    twice = csettings.with_(redis_url=f"redis://127.0.0.1:{port}/0,redis://localhost:{port}")
    result = drain(twice, "enqueue", "-", stdin=MAIL)
    err = result.stderr.decode()
    assert result.returncode == 2 and "each Redis once" in err and len(err.splitlines()) == 1, err
    assert _accepted(cells)[0] == 0


def test_the_api_refuses_cells_in_another_order(cells: list[RedisProc], csettings: Settings) -> None:
    assert drain(csettings, "status").returncode == 0  # the cells are named in this order
    other = csettings.with_(redis_url=",".join(p.url for p in reversed(cells)))
    with pytest.raises(ConfigError, match="same order everywhere"):
        Client.connect(other).enqueue(MAIL)


def test_a_sentinel_that_knows_no_such_master_is_one_short_line(csettings: Settings) -> None:
    """A Sentinel URL whose service name no Sentinel answers for (a typo, or no Sentinel up):
    the error line carried redis-py's repr of every Sentinel client, connection pools and
    all, a thousand characters cut off mid-word. Now "No master found for 'mymaster'" alone.
    Mutant caught: the split at " : <" in connection.ping removed."""
    from drain.demo.sink import free_port

    url = f"redis+sentinel://127.0.0.1:{free_port()}/mymaster"
    result = drain(csettings, "status", env={"DRAIN_REDIS_URL": url})
    err = result.stderr.decode()
    assert result.returncode == 1 and len(err.splitlines()) == 1, err
    assert "No master found for 'mymaster'" in err and "ConnectionPool" not in err and len(err) < 200, err
