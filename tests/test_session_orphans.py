"""`drain drain` starts a `drain worker` of its own: it must not outlive the session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil

from drain.intake.api import Client
from drain.settings import Settings
from tests.conftest import wait_for
from tests.test_ingress import synthetic


def test_the_sessions_worker_stops_when_the_session_is_killed(client: Client, settings: Settings) -> None:
    """A `drain drain` killed outright (kill -9, a CI timeout) left its `drain worker` running
    for ever, taking mail with nobody watching. The worker now gets SIGTERM when its session
    dies. Mutant caught: the Popen without preexec_fn (the worker lives on)."""
    client.enqueue_many([synthetic(i) for i in range(200)])
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=settings.relay)
    session = subprocess.Popen([sys.executable, "-m", "drain", "drain", "--rate", "2/s", "--processes", "1"],
                               env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    workers: list[psutil.Process] = []
    try:
        wait_for(lambda: bool(workers.extend(psutil.Process(session.pid).children()) or workers),
                 what="the session's worker starting")
        session.send_signal(signal.SIGKILL)
        session.wait(timeout=10)
        _gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
        for proc in workers:
            if proc.is_running():
                proc.kill()
