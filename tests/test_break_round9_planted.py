"""Break round 9: files planted in the local journal's folder (drain/store/localjournal.py)
must not stop, hang or crash a worker: a folder or a fifo named *.journal, a file cut
short in a way that misaligns the records after it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.settings import Settings
from drain.store.localjournal import LocalJournal

# How long a recover over a handful of planted files may take at most on a loaded box
# (it takes milliseconds; a hang is for ever).
DEADLINE_S = 10.0


def _recover_in_thread(local: LocalJournal, rclient: redis.Redis) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []

    def run() -> None:
        try:
            result.append(local.recover(rclient))
        except Exception as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE_S)
    return thread, result


def test_a_fifo_named_journal_does_not_hang_recovery(rclient: redis.Redis, tmp_path: Path) -> None:
    """A fifo named x.journal: opening it to read waits for a writer, for ever. Recovery runs
    at a worker's start and in its housekeeper (which renews the lease): a hang there stops
    the worker or lapses its lease. Mutant caught: the open without O_NONBLOCK (of
    *.journal, or of *.new)."""
    where = tmp_path / "j"
    local = LocalJournal.open(rclient, Settings(local_journal=str(where)))
    assert local is not None
    fifo = where / "planted.journal"
    os.mkfifo(fifo, 0o600)
    os.mkfifo(where / "planted.new", 0o600)
    try:
        thread, result = _recover_in_thread(local, rclient)
        assert not thread.is_alive(), "recover hung on a fifo named *.journal"
        assert result == [0]
    finally:
        # Unblock a hung open (the mutant) so the thread ends.
        for name in (fifo, where / "planted.new"):
            with contextlib.suppress(OSError):
                os.close(os.open(name, os.O_WRONLY | os.O_NONBLOCK))


def test_a_folder_named_journal_does_not_fail_recovery(rclient: redis.Redis, tmp_path: Path) -> None:
    """A folder named x.journal: reading it raised IsADirectoryError out of recover, which
    Runtime.start calls before a worker works (the worker did not start). A real dead
    file beside it is still copied. Mutants caught: no regular-file check (of
    *.journal: IsADirectoryError; of *.new: the folder removed or an error)."""
    where = tmp_path / "j"
    local = LocalJournal.open(rclient, Settings(local_journal=str(where)))
    assert local is not None
    (where / "a-folder.journal").mkdir()
    stale = where / "a-folder.new"
    stale.mkdir()
    os.utime(stale, (1, 1))  # (a ".new" file this old is a dead process's: dropped)
    thread, result = _recover_in_thread(local, rclient)
    assert not thread.is_alive()
    assert result == [0], result
    assert (where / "a-folder.journal").is_dir() and stale.is_dir()  # not ours to remove


def test_a_worker_starts_and_drains_with_a_folder_and_a_fifo_planted(
        client: Client, relay: Sink, settings: Settings, work: Callable[..., bool]) -> None:
    """End to end: a burst worker (its start runs recovery) with both planted drains the
    queue. (RQ's worker runs in the main thread: a watchdog unblocks a hung open of the fifo
    after the deadline, and the test then fails.)"""
    where = Path(settings.local_journal)
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    (where / "d.journal").mkdir()
    os.mkfifo(where / "f.journal", 0o600)
    client.enqueue_many([synthetic(i) for i in range(5)])
    finished, unblocked = threading.Event(), threading.Event()

    def watchdog() -> None:
        if not finished.wait(DEADLINE_S):
            unblocked.set()
            os.close(os.open(where / "f.journal", os.O_WRONLY))

    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    try:
        work()
    finally:
        finished.set()
        guard.join(DEADLINE_S)
    assert not unblocked.is_set(), "the worker hung at start on a fifo named *.journal"
    assert len(relay.messages) == 5
    assert client.store.books().delivered == 5


def test_a_folder_of_another_user_is_refused_even_through_a_link(rclient: redis.Redis, tmp_path: Path) -> None:
    """A folder closed to others (0700) but of another user (here `nobody`), named directly or
    through a symlink, is not used: its owner could plant entries. A link to a folder of this
    user is followed. Mutant caught: open without the owner check (only the mode's)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder to another user")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    link = tmp_path / "link"
    link.symlink_to(theirs)
    assert LocalJournal.open(rclient, Settings(local_journal=str(theirs))) is None
    assert LocalJournal.open(rclient, Settings(local_journal=str(link))) is None
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    (tmp_path / "mine-link").symlink_to(mine)
    assert LocalJournal.open(rclient, Settings(local_journal=str(tmp_path / "mine-link"))) is not None


def test_other_software_s_files_in_the_folder_are_never_deleted(rclient: redis.Redis, tmp_path: Path) -> None:
    """DRAIN_LOCAL_JOURNAL set, carelessly, to a folder other software writes to (say
    /var/log/journal, where systemd keeps `system.journal`, or a home folder with a
    `notes.new`): recovery took any *.journal whose first record it could not read for one
    of its own cut at its header, and any unlocked *.new older than a minute for one of its
    own left by a process that died making it, and deleted them. Only files that are empty
    or start with a (cut) header of ours go now. Mutants caught: the headless rule without
    the header check (system.journal deleted); the stale rule without it (notes.new)."""
    where = tmp_path / "j"
    local = LocalJournal.open(rclient, Settings(local_journal=str(where)))
    assert local is not None
    journald = where / "system.journal"
    journald.write_bytes(b"LPKSHHRH" + bytes(248))  # systemd-journald's file magic and header
    notes = where / "notes.new"
    notes.write_text("a draft\n")
    os.utime(notes, (1, 1))
    ours_cut = where / "cut.journal"
    ours_cut.write_bytes(b"\x00\x00\x00\x60drain-local-jou")  # (a header cut by a full disk)
    ours_new = where / "0123.new"
    ours_new.write_bytes(b"")  # (a process killed before its header)
    os.utime(ours_new, (1, 1))

    assert local.recover(rclient) == 0
    assert journald.read_bytes().startswith(b"LPKSHHRH") and notes.read_text() == "a draft\n"
    assert not ours_cut.exists() and not ours_new.exists()


RECOVER_CAPPED = """
import resource, sys
from pathlib import Path
import redis
from drain.store.localjournal import LocalJournal
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
local = LocalJournal(Path(sys.argv[2]), b"token")
client = redis.Redis(port=int(sys.argv[1]))
print(local.recover(client), local.recover(client), len(local.unreadable))
"""


def test_a_big_file_of_another_program_is_not_read_through(
        rclient: redis.Redis, redis_server: int, tmp_path: Path) -> None:
    """systemd's journal files run to 128 MB and more: recovery read each *.journal whole,
    every second, in every worker process, to find it was not its own. Now it reads the
    first record's start, and a file not ours is not read again. Here a 2 GB (sparse)
    system.journal and a process allowed 1 GB of address space. Mutant caught: the file
    read whole before the magic check (MemoryError)."""
    where = tmp_path / "j"
    where.mkdir(mode=0o700)
    big = where / "system.journal"
    with open(big, "wb") as handle:
        handle.write(b"LPKSHHRH")
        handle.truncate(2 << 30)
    done = subprocess.run([sys.executable, "-c", RECOVER_CAPPED, str(redis_server), str(where), str(1 << 30)],
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-600:]
    assert done.stdout.split() == [b"0", b"0", b"1"]
    assert big.stat().st_size == 2 << 30
