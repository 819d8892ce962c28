"""The housekeeper's poll for due deferred mail (every PROMOTE_EVERY_S) is spared while a
lane of its process read the deferred mail with a claim less than PROMOTE_EVERY_S ago and
nothing in that reading is due (drain.worker.dispatch.DueWatch): the reading is as fresh
as the poll's own would be. Counted by the housekeeper's polls, not by time."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator

import pytest
import redis

from drain.settings import Settings
from drain.store import keys
from drain.store.store import Store
from drain.worker import dispatch, duewatch, preamble
from drain.worker.dispatch import Span
from drain.worker.duewatch import DueWatch, watch_of
from drain.worker.housekeeping import PROMOTE_EVERY_S, Housekeeper
from tests.conftest import wait_for

SETTLE_S = 0.5  # a few of the housekeeper's ticks


@pytest.fixture
def keeper(store: Store) -> Iterator[Housekeeper]:
    watch_of(store.client).forget()  # no reading of an earlier test
    keeper = Housekeeper(store, "due-watch-test", interval_s=3600.0)
    keeper.start()
    wait_for(lambda: keeper.polls > 0, what="the housekeeper's first poll")  # its first round is done
    try:
        yield keeper
    finally:
        keeper.stop()
        keeper.watch.forget()  # (its readings stamped ahead would quiet the next tests' housekeepers)


def test_a_claims_reading_of_the_deferred_mail_reaches_the_processs_watch(
        store: Store, rclient: redis.Redis, settings: Settings) -> None:
    """Mutant caught: Span.take not handing the reading to the watch (at stays None)."""
    rclient.zadd(keys.DEFERRED, {"someone": 1234.5})
    watch = watch_of(store.client)
    watch.forget()
    sent = time.monotonic()
    preamble.read(store.client, [Span(store.client, settings)])
    rclient.zrem(keys.DEFERRED, "someone")  # (no such message: the books balance again)
    assert watch.at is not None and watch.at >= sent and watch.due == 1234.5
    watch.forget()


def test_the_housekeepers_own_poll_is_shared(keeper: Housekeeper) -> None:
    """Its poll's reading goes to the watch, for the other processes of the pool. Mutant
    caught: the poll's reading not written to the watch."""
    keeper.watch.forget()
    wait_for(lambda: keeper.watch.at is not None, timeout=10, what="a poll's reading in the watch")
    assert keeper.watch.due is None  # nothing deferred


def test_a_fresh_reading_with_nothing_due_spares_the_poll(keeper: Housekeeper) -> None:
    """A reading (stamped ahead, so it stays fresh however slow the box) that says nothing is
    deferred: the housekeeper does not ask Redis meanwhile. Mutant caught: the watch not
    consulted (a poll each PROMOTE_EVERY_S)."""
    keeper.watch.saw(None, time.monotonic() + 60)
    polls = keeper.polls
    time.sleep(SETTLE_S)  # (counts polls over a few ticks: no waiting for work)
    assert keeper.polls == polls


def test_a_reading_older_than_a_poll_is_not_trusted(keeper: Housekeeper) -> None:
    """A reading says the soonest mail is due in an hour; once it is older than
    PROMOTE_EVERY_S the housekeeper asks Redis again (mail deferred since may be due sooner).
    Mutant caught: quiet_for without the reading's age (quiet until the hour is up)."""
    polls = keeper.polls
    keeper.watch.saw(time.time() + 3600, time.monotonic())
    wait_for(lambda: keeper.polls > polls + 2, timeout=10, what="polls once the reading is stale")


def test_a_reading_whose_mail_comes_due_ends_the_quiet(keeper: Housekeeper) -> None:
    """A reading (kept fresh) says mail is due in 0.2 s: the housekeeper polls once it is
    due. Mutant caught: quiet_for ignoring the due time."""
    keeper.watch.saw(time.time() + 0.2, time.monotonic() + 60)
    polls = keeper.polls
    wait_for(lambda: keeper.polls > polls, timeout=10, what="a poll once the mail is due")


def test_an_older_reading_does_not_replace_a_newer_one() -> None:
    """Lanes' replies may come back out of order. Mutant caught: saw() without the stamp check."""
    watch = DueWatch(12345)
    watch.saw(None, 10.0)
    watch.saw(5.0, 9.0)
    assert (watch.at, watch.due) == (10.0, None)
    assert watch.quiet_for(10.01, PROMOTE_EVERY_S, 0.0) == pytest.approx(PROMOTE_EVERY_S - 0.01)
    assert watch.quiet_for(10.06, PROMOTE_EVERY_S, 0.0) == 0.0
    assert dispatch.soonest([]) is None
    watch.forget()


def _note(key: int) -> None:
    DueWatch(key).saw(77.0, 1.5)


def test_a_reading_made_in_a_forked_worker_process_is_seen_by_its_siblings() -> None:
    """The processes `drain worker --processes N` forks share the readings. Mutant caught:
    the table mapped private to each process (mmap.MAP_PRIVATE)."""
    watch = DueWatch(4242)
    watch.forget()
    child = multiprocessing.get_context("fork").Process(target=_note, args=(4242,))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert (watch.at, watch.due) == (1.5, 77.0)
    watch.forget()


def test_a_torn_or_foreign_slot_reads_as_no_reading() -> None:
    """A slot written half by one process and half by another, or by another server sharing
    the slot, is no reading (the housekeeper polls). Mutant caught: read() without the
    checksum (a torn slot trusted)."""
    watch = DueWatch(777)
    watch.saw(None, 2.0)
    assert watch.read() == (2.0, None)
    duewatch._TABLE[watch.offset + 8] ^= 0xFF  # a byte of `at` from another write
    assert watch.read() is None and watch.quiet_for(2.0, PROMOTE_EVERY_S, 0.0) == 0.0
    watch.saw(None, 2.0)
    assert DueWatch(777 + duewatch.SLOTS).read() is None  # same slot, another server
    watch.forget()
