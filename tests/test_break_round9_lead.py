"""Breaks found by the lead in session 9."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from drain.cli.queue import _eta_text
from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.observe import backlog, status
from drain.settings import Settings
from tests.test_break_round8 import _defer, _due_at


@pytest.mark.parametrize("budget", [5000, 20])
def test_drain_status_says_when_its_eta_is_only_a_lower_bound(
        budget: int, client: Client, relay: Sink, work: Callable[..., bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """`drain backlog` marked a domain's ETA that is a lower bound (">=", eta_at_least), but
    `drain status` gave the same figure as if it were exact. Now the status carries it too (JSON
    and text). Mutant caught: status.read not passing the shape's eta_at_least."""
    monkeypatch.setattr(backlog, "DUE_PAGE", 10)
    monkeypatch.setattr(backlog, "DUE_BUDGET", budget)
    _defer(client, relay, work, {"late.example": 30, "soon.example": 5})
    client.enqueue_many([b"From: a@src.example\r\nTo: u@held.example\r\n\r\nhi\r\n"])
    ratelimit.set_domain(client.redis, "held.example", 0.0)  # held: the headline counts the rest
    now = time.time()
    _due_at(client, lambda domain, rank: now + (7200 + rank if domain == "late.example" else 3600))
    ratelimit.set_global(client.redis, 100.0)
    st = status.read(client.store)
    assert st.eta_s is not None and st.eta_at_least is (budget == 20)
    assert ("eta_at_least" in st.as_dict()) is (budget == 20)
    assert _eta_text(st.eta_s, st.held_by, st.eta_at_least).startswith(">=" if budget == 20 else f"{st.eta_s:,.0f}")


@pytest.mark.parametrize("args", [("backlog", "--top", "\u0663"), ("status", "--watch", "\uff11"),
                                  ("quarantine", "list", "--limit", "\u0665"),
                                  ("tenant", "set", "t", "--weight", "\u0662")])
def test_numeric_options_take_ascii_digits_only(args: tuple[str, ...], settings: Settings) -> None:
    """Python's int() reads any Unicode digit ('\\u0663' is 3): click's numeric options took
    them, where the settings refuse them. Now every numeric option of drain's commands is a
    usage error (exit 2, one line) for them. Mutant caught: Whole without _ascii_digits."""
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "")
    result = subprocess.run([sys.executable, "-m", "drain", *args], capture_output=True, env=env, timeout=60,
                            check=False)
    err = result.stderr.decode()
    assert result.returncode == 2 and "ASCII digits" in err and len(err.strip().splitlines()) == 1, err
