"""Break round 9: a worker SIGKILLed at the points the local journal (drain/store/localjournal.py)
leaves: while recovering another's file (copied into Redis, not yet deleted), during clear."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import events, journal, keys
from drain.store.localjournal import LocalJournal
from drain.store.store import Outcome, Store
from drain.worker.housekeeping import run_once
from tests.conftest import wait_for
from tests.test_crash import kill_mid_batch

REPLY = "250 2.0.0 Ok: queued as K1"


def _entry(msg_id: str) -> bytes:
    outcome = Outcome(msg_id, "delivered", envelope=REPLY, event=events.delivered_data(REPLY, 1, 0.5))
    return journal.entry(outcome, True)


def _died_with(rclient: redis.Redis, settings: Settings, owner: str, entries: list[bytes]) -> tuple[bytes, Path]:
    """A process that wrote entries to its lane's file and died (the kernel dropped its lock):
    the Redis token and the file."""
    local = LocalJournal.open(rclient, settings)
    assert local is not None and local.append(owner, entries)
    fd, path = local.files.pop(owner)
    os.close(fd)
    return local.token, path


def test_a_recoverer_killed_between_its_copy_and_the_delete_settles_each_delivery_once(
        client: Client, store: Store, rclient: redis.Redis, tmp_path: Path) -> None:
    """The file is copied into the dead owner's Redis journal and the recovering process dies
    before it deletes the file: the next one copies it again (each entry twice in Redis).
    The reaper counts each delivered once and gives back only the undelivered one."""
    where = tmp_path / "j"
    ids = client.enqueue_many([synthetic(i) for i in range(3)]).ids
    assert store.claim("dead-k", 3).ids == ids
    token, path = _died_with(rclient, Settings(local_journal=str(where)), "dead-k", [_entry(ids[0]), _entry(ids[1])])
    kept = tmp_path / "kept"
    shutil.copy(path, kept)
    assert LocalJournal(where, token).recover(rclient) == 2
    shutil.copy(kept, path)  # (as if the recovering process died before its unlink)
    assert LocalJournal(where, token).recover(rclient) == 2
    assert sum(len(journal.unbundle(b)) for b in rclient.lrange(keys.journal("dead-k"), 0, -1)) == 4

    rclient.delete(keys.lease("dead-k"))
    assert store.reap_dead() == (1, 0)
    books = store.books()
    assert books.delivered == 2 and books.queued == 1 and books.balanced, books


@pytest.mark.parametrize(("every", "most"), [("25", 8), ("1", 2)])
def test_a_killed_worker_whose_host_runs_no_other_repeats_at_most_the_redis_journal_window(
        every: str, most: int, client: Client, relay: Sink, settings: Settings, work: Callable[..., bool],
        rclient: redis.Redis) -> None:
    """The worker is killed while the relay holds its 8th message, and the reaper that gives
    its claim back is on another host (it cannot see the file): that is the case the local
    journal does not cover (README: a host with no worker back within the lease), bounded by
    DRAIN_REDIS_JOURNAL_EVERY, not DRAIN_SETTLE_EVERY. With the default 25 its 7 deliveries
    were never written to Redis and go again; with 1 (an operator who wants the old bound
    everywhere), only the one in the relay's hands, at most one more. (Found by the session 9
    break round as a strict xfail; kept as the documented bound.)"""
    total = 30
    client.enqueue_many([synthetic(i) for i in range(total)])
    kill_mid_batch(client, relay, settings, DRAIN_SETTLE_EVERY="1", DRAIN_RELAY_SESSIONS="1",
                   DRAIN_REDIS_JOURNAL_EVERY=every)
    elsewhere = Store(rclient, settings)  # another host's housekeeper: no local journal of this one
    wait_for(lambda: (run_once(elsewhere, force=True), client.store.books().in_flight == 0)[1],
             what="the lease to lapse")
    work(local_journal="off")  # another host's worker
    books = client.store.books()
    assert books.delivered == total and books.balanced, books
    assert len(relay.messages) - total <= most
    if every == "25":
        assert len(relay.messages) - total >= 7  # (the window really is Redis's journal's)


def test_a_damaged_journal_key_does_not_stop_workers_from_starting(
        client: Client, relay: Sink, settings: Settings, work: Callable[..., bool],
        rclient: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    """A dead process's file whose owner's journal key in Redis is damaged (a string where a
    list belongs): recovery's RPUSH got WRONGTYPE, which escaped recover and Runtime.start,
    so no worker could start on that host while the file was there. The project's rule for a
    damaged key is that it fails its own step alone: the file is left (told once) and the
    worker works. The warning quotes Redis's words only (redis-py's text of the error quotes
    the entries: a relay's reply, bytes from outside). Mutants caught: recover without the
    per-file catch of Redis's refusal; the warning with the whole error text."""
    where = Path(settings.local_journal)
    _token, path = _died_with(rclient, settings, "dead-wrongtype", [_entry("ab01")])
    rclient.set(keys.journal("dead-wrongtype"), b"not a list")
    client.enqueue_many([synthetic(i) for i in range(3)])
    work()
    assert len(relay.messages) == 3 and client.store.books().delivered == 3
    assert path.exists() and path.parent == where  # left for when the key is mended
    [told] = [r.getMessage() for r in caplog.records if "not copied" in r.getMessage()]
    assert "WRONGTYPE" in told and str(path) in told and told.isprintable() and "ab01" not in told


def test_a_damaged_instance_key_turns_the_local_journal_off_not_the_workers(
        client: Client, relay: Sink, work: Callable[..., bool], rclient: redis.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    """drain:instance (the token naming this Redis to the local journals) holding a hash:
    SET NX left it, GET got WRONGTYPE, and LocalJournal.open raised out of Runtime.build:
    no worker could start, on any host. Now the local journal is off (told) and the
    workers journal in Redis. Mutant caught: open without the catch."""
    rclient.hset(keys.INSTANCE, "damaged", "1")
    client.enqueue_many([synthetic(i) for i in range(3)])
    work()
    assert len(relay.messages) == 3 and client.store.books().delivered == 3
    assert any("no local delivery journal" in r.getMessage() and keys.INSTANCE in r.getMessage()
               for r in caplog.records)
