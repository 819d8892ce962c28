"""`drain drain`: an operator's drain session. Sets the rate if asked, runs worker
processes, shows progress until nothing is queued, and on Ctrl-C stops the workers the
gentle way (each finishes and records its batch) so the books stay exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Protocol

from rich.console import Console

from drain.cli.progress import HasBooks, done, watch
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.ops import control
from drain.store.connection import resolve_url


class Cells(HasBooks, Protocol):
    """What a session over several cells needs of them (drain.cli.cellops.CellsBooks)."""

    count: int

    def set_rate(self, per_second: float | None) -> None: ...

    def rate(self) -> float | None: ...

    def top_up(self) -> None: ...


# How long stopping workers may take to finish their batch before they are killed.
STOP_GRACE_S = 60.0


def run_session(client: Client, rate: float | None, set_rate: bool, processes: int, console: Console,
                cells: Cells | None = None) -> bool:
    """Drain until nothing is queued. With several cells (`cells`: their books added up, a
    way to set the rate over them and to give each its tokens), `drain worker` runs a group
    per cell and the progress is the cells' sum."""
    books_of: HasBooks = cells or client.store
    books = books_of.books()  # first: a cell that is down stops the session before any rate is changed
    if set_rate:
        cells.set_rate(rate) if cells else ratelimit.set_global(client.redis, rate)
    url = client.settings.redis_url or "" if cells else resolve_url(client.settings)
    pace = ratelimit.format_rate(cells.rate() if cells else ratelimit.get_global(client.redis))
    console.print(f"draining {books.queued:,} queued messages at {pace} with {processes} worker process(es)"
                  + (f" per cell ({cells.count} cells)" if cells else "") + "; Ctrl-C stops cleanly")
    env = dict(os.environ, DRAIN_REDIS_URL=url)
    proc = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--processes", str(processes),
                             "--log-level", "WARNING"], env=env, stdout=subprocess.DEVNULL,
                            preexec_fn=_stop_with_session)
    # The rate set above may have held it; tokens once workers run.
    cells.top_up() if cells else control.top_up(client.store)
    finished = False
    try:
        watched = watch(books_of, proc, console, stall_limit_s=float("inf"), baseline=done(books))
        finished = watched.finished
        if not finished:
            console.print(f"[red]stopped: {watched.reason}[/]")
    except KeyboardInterrupt:
        console.print("stopping: workers finish and record their current batch...")
    finally:
        _stop(proc)
    final = books_of.books()
    console.print(f"books: {final.as_dict()} -> {'balanced' if final.balanced else 'NOT BALANCED'}")
    return finished and final.balanced


def _stop_with_session() -> None:
    """In the session's worker, before it runs: SIGTERM (RQ's warm shutdown) when the session
    dies, even killed outright, so no worker outlives the session that started it (Linux
    prctl PR_SET_PDEATHSIG; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # RQ's warm shutdown: the current job completes
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()  # what they held comes back when their leases lapse
        proc.wait()
