"""Breaks found by the lead in session 9."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from drain.cli.queue import _eta_text
from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.observe import backlog, status
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
