"""The refresher: a thread that reads a Snapshot every couple of seconds and keeps the last good one.

Requests are answered from what it kept, never by waiting on Redis: when Redis is slow or
down, the last figures are still there, with when Redis went away and why (in words fit for a
public page).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from drain.observe.model import Reading, Snapshot, View

log = logging.getLogger(__name__)

REFRESH_S = 2.0


def _kind(exc: BaseException) -> str:
    """What went wrong, for a public page: no host names, addresses or credentials (the full
    error goes to the log)."""
    if isinstance(exc, redis.TimeoutError | TimeoutError):
        return "Redis did not answer in time"
    if isinstance(exc, redis.AuthenticationError):
        return "Redis refused the credentials"
    if isinstance(exc, redis.ConnectionError | ConnectionError):
        return "cannot connect to Redis"
    return f"Redis error ({type(exc).__name__})"


@dataclass
class Snapshots:
    """The refresher: a thread that keeps the last good Snapshot and Redis's state."""

    read: Callable[[], Snapshot]
    refresh_s: float = REFRESH_S
    show_messages: bool = True
    snapshot: Snapshot | None = None
    last_error: str | None = None
    down_since: float | None = None
    started_at: float = field(default_factory=time.time)
    stopping: threading.Event = field(default_factory=threading.Event)
    refreshed: threading.Event = field(default_factory=threading.Event)
    # Called in the refresher thread after each read (the HTTP side renders its bodies there).
    after_refresh: Callable[[], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Read once; True if Redis answered."""
        try:
            snap = self.read()
        except (redis.RedisError, OSError) as exc:
            with self._lock:
                if self.down_since is None:
                    self.down_since = time.time()
                    log.warning("Redis unreachable, serving figures from before: %s", exc)
                self.last_error = _kind(exc)
            return False
        except Exception:  # a bug must not stop the page from answering with what it has
            log.exception("reading the status snapshot failed")
            with self._lock:
                self.last_error = "internal error reading figures (see the server log)"
                if self.down_since is None:
                    self.down_since = time.time()
            return False
        with self._lock:
            if self.down_since is not None:
                log.warning("Redis answers again")
            self.snapshot, self.last_error, self.down_since = snap, None, None
        return True

    def _run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            self.refresh()
            if self.after_refresh is not None:
                try:
                    self.after_refresh()
                except Exception:
                    log.exception("rendering the status page failed")
            self.refreshed.set()
            # A read that takes long (a huge backlog shape) spaces the next one out: at most
            # about a quarter of the time is spent reading.
            self.stopping.wait(max(self.refresh_s, 3 * (time.monotonic() - started)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="drain-serve-refresher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def view(self) -> View:
        with self._lock:
            return View(self.snapshot, self.down_since is None and self.snapshot is not None,
                        self.down_since, self.last_error, self.started_at, time.time(), self.refresh_s,
                        self.show_messages)

    def reading(self) -> Reading:
        view = self.view()
        return Reading(view.snapshot.figures if view.snapshot else None, view.up)
