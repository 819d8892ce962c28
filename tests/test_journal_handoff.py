"""The lanes of a process hand their deliveries to one journal write (drain.worker.journalpool):
a lane that finds no place of the settle window free waits a moment for the other lane's
message in progress, so the write carries the whole window rather than all but that one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink, Stall
from drain.intake.api import Client
from drain.worker import batch, journalpool


def journal_writes(rclient: redis.Redis) -> int:
    return int(rclient.info("commandstats").get("cmdstat_rpush", {}).get("calls", 0))


@pytest.mark.parametrize("lanes", [2, 3])
def test_a_journal_write_carries_the_whole_window(
        client: Client, relay: Sink, rclient: redis.Redis, work: Callable[..., bool],
        monkeypatch: pytest.MonkeyPatch, lanes: int) -> None:
    """60 deliveries, a window of 3, two or three lanes: about one write per three deliveries
    (the lanes' last few are settled with their claims instead). The wait is made long here
    so that a loaded machine does not cut it short; it ends when the other lanes hand in.
    Mutant caught: flush_full flushing at once (a write per ~two deliveries: ~30)."""
    monkeypatch.setattr(journalpool, "HANDOFF_WAIT_S", 5.0)
    client.enqueue_many([synthetic(i) for i in range(60)])
    rclient.config_resetstat()
    work(relay_sessions=lanes, settle_every=3, batch_size=30, max_tokens=1, local_journal="off")
    books = client.store.books()
    assert books.delivered == 60 and books.queued == 0
    assert journal_writes(rclient) <= 22, journal_writes(rclient)


def test_the_wait_is_seldom_tried_while_the_relay_is_slow(
        client: Client, relay: Sink, work: Callable[..., bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each message takes the relay 30 ms, far beyond the 2 ms wait: a lane that waited in
    vain flushes at once the next 1, 2, 4 ... times (HANDOFF_SKIP_MOST), so a slow relay costs
    a few waits a job, not one every other message. Mutant caught: no skipping after a wait
    that ran out (as many run out as are tried: about one per flush)."""
    pools: list[journalpool.JournalPool] = []
    calls = [0]

    class Counted(journalpool.JournalPool):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            pools.append(self)

        def flush_full(self, places: int, within_s: float | None = None) -> int:
            calls[0] += 1
            return super().flush_full(places, within_s)

    monkeypatch.setattr(batch, "JournalPool", Counted)
    relay.set_policy(data_policy=lambda _index, _msg: Stall(seconds=0.03))
    client.enqueue_many([synthetic(i) for i in range(40)])
    work(relay_sessions=2, settle_every=3, batch_size=20, max_tokens=1, local_journal="off")
    assert client.store.books().delivered == 40
    ran_out = sum(p.ran_out for p in pools)
    assert calls[0] >= 12, calls[0]  # the lanes did look for a place often
    assert ran_out <= 6, (ran_out, calls[0])
