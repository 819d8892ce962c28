"""Break round 9: a worker SIGKILLed at the points the local journal (drain/store/localjournal.py)
leaves: while recovering another's file (copied into Redis, not yet deleted), during clear."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import events, journal, keys
from drain.store.localjournal import LocalJournal
from drain.store.store import Outcome, Store

REPLY = "250 2.0.0 Ok: queued as K1"


def _entry(msg_id: str) -> bytes:
    outcome = Outcome(msg_id, "delivered", envelope=REPLY, event=events.delivered_data(REPLY, 1, 0.5))
    return journal.entry(outcome, True)


def test_a_recoverer_killed_between_its_copy_and_the_delete_settles_each_delivery_once(
        client: Client, store: Store, rclient: redis.Redis, tmp_path: Path) -> None:
    """The file is copied into the dead owner's Redis journal and the recovering process dies
    before it deletes the file: the next one copies it again (each entry twice in Redis).
    The reaper counts each delivered once and gives back only the undelivered one."""
    where = tmp_path / "j"
    ids = client.enqueue_many([synthetic(i) for i in range(3)]).ids
    assert store.claim("dead-k", 3).ids == ids
    dead = LocalJournal.open(rclient, Settings(local_journal=str(where)))
    assert dead is not None
    assert dead.append("dead-k", [_entry(ids[0]), _entry(ids[1])])
    fd, path = dead.files.pop("dead-k")
    os.close(fd)
    kept = tmp_path / "kept"
    shutil.copy(path, kept)
    assert LocalJournal(where, dead.token).recover(rclient) == 2
    shutil.copy(kept, path)  # (as if the recovering process died before its unlink)
    assert LocalJournal(where, dead.token).recover(rclient) == 2
    assert rclient.llen(keys.journal("dead-k")) == 4

    rclient.delete(keys.lease("dead-k"))
    assert store.reap_dead() == (1, 0)
    books = store.books()
    assert books.delivered == 2 and books.queued == 1 and books.balanced, books
