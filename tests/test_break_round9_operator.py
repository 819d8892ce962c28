"""Break round 9, as a new operator: where does a worker journal its deliveries on local
disk (drain/store/localjournal.py)? Nothing said it. The folder defaults to HOME/journal,
and HOME to ./.drain: workers started in different folders journal in different places,
and one copies only the dead processes' files of its own folder. The worker's start line
now names the folder, made absolute, or says it is off."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from drain.settings import Settings


def _start_line(settings: Settings, cwd: Path, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "drain", "worker", "--burst", "--log-level", "INFO"],
        env=dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=settings.relay, **env),
        cwd=cwd, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    lines = [line for line in done.stderr.decode(errors="replace").splitlines() if "drain worker: Redis" in line]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_the_worker_s_start_line_names_its_local_journal(settings: Settings, tmp_path: Path) -> None:
    """Mutant caught: the start line without the local journal (as before)."""
    here, there = tmp_path / "a", tmp_path / "b"
    here.mkdir()
    there.mkdir()
    first = _start_line(settings, here, DRAIN_LOCAL_JOURNAL="jr")
    second = _start_line(settings, there, DRAIN_LOCAL_JOURNAL="jr")
    assert f"local delivery journal {here / 'jr'}" in first
    assert f"local delivery journal {there / 'jr'}" in second
    assert "local delivery journal off" in _start_line(settings, here, DRAIN_LOCAL_JOURNAL=" OFF ")


def test_the_words_every_other_switch_takes_for_off_turn_the_local_journal_off(tmp_path: Path) -> None:
    """DRAIN_LOCAL_JOURNAL=false (or 0, no: what drain's true/false settings take for off) made
    a folder named `false` in the worker's folder and journalled there. Mutant caught:
    only `off` recognised."""
    from drain.store.localjournal import folder

    for word in ("off", " OFF ", "false", "False", "0", "no", " No "):
        assert folder(Settings(local_journal=word)) is None, word
    assert folder(Settings(local_journal="", home=tmp_path)) == tmp_path / "journal"
    assert folder(Settings(local_journal=str(tmp_path / "j"))) == tmp_path / "j"


def test_recovery_s_log_names_the_dead_owner_and_its_file_and_shows_no_escape_sequence(
        rclient: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The operator read 'a dead worker's N deliveries found' and could not tell which worker
    or which file. Now the owner (as text that cannot carry a terminal escape: it came from
    a file) and the file are named. Mutant caught: the line without them."""
    from drain.store.localjournal import LocalJournal
    from tests.test_local_journal import _entry

    where = tmp_path / "j"
    dead = LocalJournal.open(rclient, Settings(local_journal=str(where)))
    assert dead is not None
    owner = "host-42-abcd/1\x1b[31m"
    assert dead.append(owner, [_entry("ee01")])
    fd, path = dead.files.pop(owner)
    os.close(fd)
    caplog.set_level(logging.WARNING, logger="drain.store.localjournal")
    assert LocalJournal(where, dead.token).recover(rclient) == 1
    [line] = [r.getMessage() for r in caplog.records if "deliveries found" in r.getMessage()]
    assert "host-42-abcd/1" in line and str(path) in line
    assert "\x1b" not in line
