"""A live progress bar over the books while workers drain the queue (rich)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from drain.store.store import Books


class HasBooks(Protocol):
    """Whatever gives the books: a Store, or several cells' added up."""

    def books(self) -> Books: ...


# Progress refreshes this often (seconds).
TICK_S = 0.2


@dataclass
class Watched:
    finished: bool  # the queue emptied
    first_done_at: float  # monotonic time the first message was done
    reason: str = ""  # why it stopped otherwise


def done(books: Books) -> int:
    return books.delivered + books.bounced + books.quarantined + books.deleted


def watch(store: HasBooks, proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None, console: Console,
          stall_limit_s: float = 60.0, baseline: int = 0) -> Watched:
    """Show done/total, pace, ETA and quarantined so far until nothing is queued, the
    workers exit, or nothing moves for stall_limit_s. `baseline` is what was already done
    before (left out of the bar)."""
    columns = (TextColumn("[bold]draining"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    started = time.monotonic()
    first: float | None = None
    last_change, last_done = started, -1
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("drain", total=None, info="")
        while True:
            books = store.books()
            finished = done(books) - baseline
            if finished and first is None:
                first = time.monotonic()
            elapsed = time.monotonic() - (first or started)
            pace = finished / elapsed if elapsed > 0.5 else 0.0
            eta = f"eta {books.queued / pace:,.0f}s" if pace > 0 and books.queued else "eta -"
            progress.update(task, total=finished + books.queued, completed=finished,
                            info=f"{pace:,.0f}/s {eta} quarantined {books.quarantined:,} bounced {books.bounced:,}"
                                 # deferred mail waits for its next attempt: a dead relay showed
                                 # only "0/30 eta -" for as long as it was down
                                 f"{f' deferred {books.deferred:,}' if books.deferred else ''}")
            if books.queued == 0:
                return Watched(True, first or started)
            if finished != last_done:
                last_change, last_done = time.monotonic(), finished
            if proc is not None and proc.poll() is not None:
                return Watched(False, first or started, "the workers exited")
            if time.monotonic() - last_change > stall_limit_s:
                return Watched(False, first or started, f"no progress for {stall_limit_s:.0f}s")
            time.sleep(TICK_S)
