"""`drain worker` over several cells: one worker group per cell, each a `drain worker` process
of its own against that cell's Redis alone (so a cell that is down holds back only its own
group: the group waits for its Redis, logging, and works again when it returns).

The groups run in their own sessions: a signal to this process (SIGTERM from a service
manager, SIGINT from a terminal) is passed on to each group exactly once, so every group
stops the gentle way (its current batch finishes and is recorded). Under systemd, use
KillMode=mixed so the signal is not also sent to every process directly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

from drain.settings import Settings
from drain.store.cells import cells_of


def command(processes: int, burst: bool, log_level: str) -> list[str]:
    return [sys.executable, "-m", "drain", "worker", "--processes", str(processes), "--log-level", log_level,
            *(["--burst"] if burst else [])]


def run_all(settings: Settings, processes: int, burst: bool, log_level: str) -> int:
    """Run a worker group per cell until they stop; returns the worst exit code."""
    groups: list[subprocess.Popen[bytes]] = []
    for cell in cells_of(settings):
        env = dict(os.environ, DRAIN_REDIS_URL=cell.url)
        groups.append(subprocess.Popen(command(processes, burst, log_level), env=env, start_new_session=True))

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        for proc in groups:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [proc.wait() for proc in groups]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max((abs(code) for code in codes), default=0)
