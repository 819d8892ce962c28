"""The lanes of a process hand their deliveries to one journal write (drain.worker.journalpool):
a lane that finds no place of the settle window free waits a moment for the other lane's
message in progress, so the write carries the whole window rather than all but that one."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.worker import journalpool


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
    work(relay_sessions=lanes, settle_every=3, batch_size=30, max_tokens=1)
    books = client.store.books()
    assert books.delivered == 60 and books.queued == 0
    assert journal_writes(rclient) <= 22, journal_writes(rclient)
