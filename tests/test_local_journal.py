"""The delivery journal on local disk (drain/store/localjournal.py): a killed worker's
deliveries are settled from its lanes' files, not sent again, and Redis's journal is
written only every DRAIN_REDIS_JOURNAL_EVERY deliveries."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import events, journal, keys
from drain.store.localjournal import LocalJournal
from drain.store.store import Outcome, Store
from tests.conftest import wait_for
from tests.test_crash import kill_mid_batch

REPLY = "250 2.0.0 Ok: queued as L1"


def _entry(msg_id: str) -> bytes:
    outcome = Outcome(msg_id, "delivered", envelope=REPLY, event=events.delivered_data(REPLY, 1, 0.5))
    return journal.entry(outcome, True)


def _redis_journalled(rclient: redis.Redis) -> int:
    return sum(int(rclient.llen(k)) for k in rclient.scan_iter(keys.journal("*")))


def test_a_live_process_s_file_is_left_alone_and_a_dead_one_s_is_copied_once(
        client: Client, store: Store, rclient: redis.Redis, tmp_path: Path) -> None:
    """The lock tells a live file from a dead one; the copy lands in the owner's journal,
    where the reaper settles it; the file goes. Mutants caught: recover without the lock
    test (the live lane's entries copied while it runs); recover not deleting the file
    (copied again at each round)."""
    where = tmp_path / "j"
    ids = client.enqueue_many([synthetic(i) for i in range(5)]).ids
    assert store.claim("dead-1", 3).ids == ids[:3]
    assert store.claim("live-1", 2).ids == ids[3:]
    dead = LocalJournal.open(rclient, Settings(local_journal=str(where)))
    live = LocalJournal.open(rclient, Settings(local_journal=str(where)))
    other = LocalJournal.open(rclient, Settings(local_journal=str(where)))
    assert dead is not None and live is not None and other is not None
    assert dead.append("dead-1", [_entry(ids[0]), _entry(ids[1])])
    assert live.append("live-1", [_entry(ids[3])])
    fd, _path = dead.files.pop("dead-1")
    os.close(fd)  # the process died: the kernel dropped its lock
    store.renew("live-1")

    assert other.recover(rclient) == 2
    assert other.recover(rclient) == 0
    assert [len(list(where.glob("*.journal")))] == [1]  # the live lane's
    assert int(rclient.llen(keys.journal("dead-1"))) == 1 and not rclient.exists(keys.journal("live-1"))

    rclient.delete(keys.lease("dead-1"))
    assert store.reap_dead() == (1, 0)  # the third goes back; two count as delivered
    books = store.books()
    assert books.delivered == 2 and books.balanced, books


def test_a_cut_record_ends_the_file_and_another_redis_s_file_is_not_copied(
        rclient: redis.Redis, store: Store, client: Client, tmp_path: Path) -> None:
    """A record cut short (the disk filled) is not copied, those before it are; a file
    headed with another Redis's token stays where it is (its own drain copies it). Mutant
    caught: recover without the token check (another drain's entries pushed here)."""
    where = tmp_path / "j"
    ids = client.enqueue_many([synthetic(i) for i in range(2)]).ids
    assert store.claim("w-cut", 2).ids == ids
    mine = LocalJournal.open(rclient, Settings(local_journal=str(where)))
    assert mine is not None
    assert mine.append("w-cut", [_entry(ids[0]), _entry(ids[1])])
    fd, path = mine.files.pop("w-cut")
    os.ftruncate(fd, os.fstat(fd).st_size - 3)
    os.close(fd)
    foreign = LocalJournal(where, b"another-redis")
    assert foreign.append("w-foreign", [_entry("ffff")])
    fd, foreign_path = foreign.files.pop("w-foreign")
    os.close(fd)

    reader = LocalJournal(where, mine.token)
    assert reader.recover(rclient) == 1
    assert not path.exists() and foreign_path.exists()
    assert int(rclient.llen(keys.journal("w-cut"))) == 1 and not rclient.exists(keys.journal("w-foreign"))


def test_clear_and_close_keep_only_what_is_not_settled(rclient: redis.Redis, tmp_path: Path) -> None:
    """clear empties a lane's file after its settle; at a stop a file with entries left (the
    last settle failed) stays for recovery, an empty one goes."""
    where = tmp_path / "j"
    local = LocalJournal.open(rclient, Settings(local_journal=str(where)))
    assert local is not None
    assert local.append("a", [_entry("aa")]) and local.append("b", [_entry("bb")])
    local.clear("a")
    kept = local.files["b"][1]
    local.close()
    assert list(where.glob("*.journal")) == [kept]
    assert LocalJournal(where, local.token).recover(rclient) == 1


def test_off_and_unusable_folders_fall_back_to_redis_s_journal(rclient: redis.Redis, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert LocalJournal.open(rclient, Settings(local_journal="off")) is None
    assert LocalJournal.open(rclient, Settings(local_journal=str(blocker / "j"))) is None


def test_a_worker_killed_mid_batch_resends_only_the_message_in_the_relay_s_hands(
        client: Client, relay: Sink, settings: Settings, work: Callable[..., bool],
        housekeep: Callable[[], object], rclient: redis.Redis) -> None:
    """With the local journal on (the default) and DRAIN_SETTLE_EVERY 1, a worker killed while
    the relay holds its 8th message wrote its 7 deliveries to local disk and none to Redis
    (DRAIN_REDIS_JOURNAL_EVERY 25). The next worker to start on the host copies them into
    the dead process's journal (its first housekeeping round, before the reaper's step); the
    reaper settles them delivered, and only the 8th is sent twice. Mutants caught: recover
    doing nothing (7 more copies at the relay); the window left at DRAIN_SETTLE_EVERY (7
    entries in Redis before the kill)."""
    total = 30
    client.enqueue_many([synthetic(i) for i in range(total)])
    kill_mid_batch(client, relay, settings, DRAIN_SETTLE_EVERY="1", DRAIN_RELAY_SESSIONS="1")
    assert _redis_journalled(rclient) == 0
    assert len(list(Path(settings.local_journal).glob("*.journal"))) == 1

    work()  # starts on this host: copies the dead process's file, then drains what is ready
    assert not list(Path(settings.local_journal).glob("*.journal"))
    wait_for(lambda: (housekeep(), client.store.books().in_flight == 0)[1], what="the lease to lapse")
    work()
    books = client.store.books()
    assert books.delivered == total and books.queued == 0 and books.balanced, books
    assert {m.message_id for m in relay.messages} == {f"<synthetic-{i}@sender.example.com>" for i in range(total)}
    assert len(relay.messages) - total <= 1


def test_a_folder_others_may_write_to_is_refused_and_an_empty_file_is_dropped(
        rclient: redis.Redis, tmp_path: Path) -> None:
    """Anyone who may write to the folder could plant entries that count queued mail as
    delivered: a group- or world-writable folder is not used. A file with no header (killed
    between clear's truncate and its write) goes without a word. Mutants caught: open without
    the mode check (a journal in a 0777 folder); recover keeping headless files."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    assert LocalJournal.open(rclient, Settings(local_journal=str(shared))) is None
    where = tmp_path / "j"
    local = LocalJournal.open(rclient, Settings(local_journal=str(where)))
    assert local is not None and (where.stat().st_mode & 0o777) == 0o700
    (where / "cut.journal").write_bytes(b"")
    assert local.recover(rclient) == 0 and not (where / "cut.journal").exists()


def test_a_frozen_process_s_entries_are_copied_once_its_lease_lapsed(
        client: Client, store: Store, rclient: redis.Redis, tmp_path: Path) -> None:
    """A process that holds its lock but whose lease lapsed (stopped, a paused VM) may see its
    claim given back any moment: what it journalled on disk is copied then, each entry once,
    and its file stays. Mutants caught: _copy skipping locked files (nothing copied: its
    deliveries sent again, tests/test_freeze.py); the offset not kept (the first entry copied
    at every round)."""
    where = tmp_path / "j"
    ids = client.enqueue_many([synthetic(i) for i in range(3)]).ids
    assert store.claim("frozen-1", 3).ids == ids
    frozen = LocalJournal.open(rclient, Settings(local_journal=str(where)))
    other = LocalJournal.open(rclient, Settings(local_journal=str(where)))
    assert frozen is not None and other is not None
    assert frozen.append("frozen-1", [_entry(ids[0])])
    store.renew("frozen-1")
    assert other.recover(rclient) == 0  # its lease lives: nothing to do
    rclient.delete(keys.lease("frozen-1"))
    assert other.recover(rclient) == 1 and other.recover(rclient) == 0
    assert frozen.append("frozen-1", [_entry(ids[1])])  # it wakes for a moment
    assert other.recover(rclient) == 1
    assert len(list(where.glob("*.journal"))) == 1
    assert store.reap_dead() == (1, 0)
    books = store.books()
    assert books.delivered == 2 and books.balanced, books
