"""Break round 9: the local journal's disk fills mid-run (a 16 KB tmpfs, really full).

write() on a disk that fills takes what fits and returns the count: a short write, no
error. The journal took that as written: the delivery counted as safe on disk while its
record was cut, and the lane went on writing after the cut record, which misaligns every
record that follows (recovery reads the next records as the rest of the cut one)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from drain.settings import Settings
from drain.store import events, journal, keys
from drain.store.localjournal import LocalJournal
from drain.store.store import Outcome

REPLY = "250 2.0.0 Ok: queued as F1"


def _entry(msg_id: str) -> bytes:
    outcome = Outcome(msg_id, "delivered", envelope=REPLY, event=events.delivered_data(REPLY, 1, 0.5))
    return journal.entry(outcome, True)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 KB tmpfs (four pages); skipped where this process may not mount one."""
    where = tmp_path / "tiny"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs", str(where)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(where: Path) -> Path:
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_short_write_on_a_full_disk_is_a_failure_and_nothing_follows_the_cut(
        rclient: redis.Redis, tiny_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The lane's batch of entries does not fit: append says False (the caller journals them
    in Redis at once) and writes nothing more; recovery of the file then copies only whole
    entries that were written; the log names the folder. Mutant caught: append ignoring
    write()'s count (True for a cut batch, and the next delivery's record written after
    the cut)."""
    local = LocalJournal.open(rclient, Settings(local_journal=str(tiny_disk / "j")))
    assert local is not None
    first = _entry("aa01")
    assert local.append("w-full", [first])
    filler = _fill(tiny_disk)
    batch = [_entry(f"bb{i:04d}") for i in range(80)]  # ~10 KB: more than the page has left
    assert sum(map(len, batch)) > 4096
    assert not local.append("w-full", batch), "a cut write was taken as written"
    [told] = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert str(tiny_disk / "j") in told and "No space left" in told  # (which disk, told once)
    filler.unlink()  # room again (another file deleted): the lane must not write after the cut
    later = _entry("cc01")
    assert not local.append("w-full", [later])

    fd, path = local.files.pop("w-full")
    os.close(fd)  # the process dies
    assert LocalJournal(local.where, local.token).recover(rclient) >= 1
    copied = [e for b in rclient.lrange(keys.journal("w-full"), 0, -1) for e in journal.unbundle(b)]
    assert copied[0] == first
    assert set(copied) <= {first, *batch}, "recovery copied bytes that were never an entry"
    assert later not in copied
    assert not path.exists()
    with contextlib.suppress(OSError):
        os.unlink(path)


def test_a_folder_gone_read_only_neither_stops_recovery_nor_copies_a_file_again_and_again(
        rclient: redis.Redis, tiny_disk: Path) -> None:
    """A disk the kernel remounted read-only (ext4's errors=remount-ro after an I/O error)
    holding a dead process's file: recovery copied its entries, then unlink raised EROFS
    out of recover. Recovery runs at a worker's start (the worker did not start) and every
    second in the housekeeper (the same entries pushed into Redis again each second, the
    owner's journal growing without end). Now the file is copied once a process and left.
    Mutants caught: the unlink failure not caught (EROFS out of recover); a file copied
    but not deleted not remembered (copied at every round)."""
    dead = LocalJournal.open(rclient, Settings(local_journal=str(tiny_disk / "j")))
    assert dead is not None
    assert dead.append("w-ro", [_entry("dd01"), _entry("dd02")])
    fd, path = dead.files.pop("w-ro")
    os.close(fd)  # the process dies
    done = subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only: {done.stderr.decode(errors='replace').strip()}")

    keeper = LocalJournal(dead.where, dead.token)
    assert keeper.recover(rclient) == 2
    assert keeper.recover(rclient) == 0
    assert keeper.recover(rclient) == 0
    assert sum(len(journal.unbundle(b)) for b in rclient.lrange(keys.journal("w-ro"), 0, -1)) == 2
    assert path.exists()
