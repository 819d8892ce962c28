"""What a worker's log tells an operator while Redis is away.

Found by restarting Redis under running workers: each worker process's housekeeping thread
retries every 50 ms and logged a warning at every try, about 20 lines a second per process
(234 lines in 6 s from two processes), burying the lines that said what was going on."""

from __future__ import annotations

import logging

import pytest

from drain.demo.sink import free_port
from drain.settings import Settings
from drain.store.connection import client_for
from drain.store.store import Store
from drain.worker.housekeeping import Housekeeper
from tests.conftest import wait_for


class CountingStore(Store):
    """The real Store; it only counts how often housekeeping tried to renew its lease."""

    tries = 0

    def renew(self, owner: str) -> None:
        self.tries += 1
        super().renew(owner)


def test_housekeeping_does_not_flood_the_log_while_redis_is_away(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there: every Redis call is refused at once
    client = client_for(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)  # drain's own client: no silent retries
    store = CountingStore(client, Settings(redis_url=f"redis://127.0.0.1:{port}/0", lease_ttl_s=0.3))
    keeper = Housekeeper(store, "operator-test", interval_s=0.05)
    with caplog.at_level(logging.WARNING, logger="drain.worker.housekeeping"):
        keeper.start()
        try:
            wait_for(lambda: store.tries >= 30, what="30 housekeeping attempts against a Redis that is away")
        finally:
            keeper.stop()
    failed = [r for r in caplog.records if "housekeeping failed" in r.getMessage()]
    assert 1 <= len(failed) <= 2, f"{len(failed)} warnings for {store.tries} failed attempts"
    assert "Connection refused" in failed[0].getMessage() or "connecting" in failed[0].getMessage()
