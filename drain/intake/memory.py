"""The memory guard: intake refuses new mail while Redis is nearly full (like Postfix's queue_minfree).

Mail lives in Redis memory. Past DRAIN_MAX_MEMORY_FRACTION of Redis's `maxmemory`, the API
raises QueueFull, `drain enqueue` stops with one line, and the SMTP ingress answers 452 4.3.1.
Delivery is never guarded: it is what frees the memory, and intake reopens by itself once
usage is back under the line. A Redis without a maxmemory (0) is never closed this way.
A Redis whose maxmemory-policy was changed to evict after drain connected (drain refuses one
at connect) closes intake too, until the policy is noeviction again.

The check costs one `INFO memory` per guard at most every `recheck_s` (one guard per
Client: one per process for `drain enqueue` and `drain smtpd`), not one per message.
Redis can still refuse a write for lack of memory (a chunk that overshoots, several
producers at once): that reply is turned into QueueFull too, never a raw redis error.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import redis

from drain.errors import QueueFull

log = logging.getLogger(__name__)

# How long one reading of INFO memory is trusted.
RECHECK_S = 0.25
# Once closed, intake reopens only this share of maxmemory under the line: Redis's own use
# moves by tens of KB without any mail moving (client buffers shrink, a lazy free ends), and
# a guard that reopened on such a dip would let mail in one message at a time at the line.
REOPEN_MARGIN = 0.02


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


class MemoryGuard:
    """Is Redis too full to take new mail? Thread-safe (the SMTP ingress asks from worker threads)."""

    def __init__(self, client: redis.Redis, fraction: float, recheck_s: float = RECHECK_S) -> None:
        self._client = client
        self.fraction = fraction
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._refusal: str | None = None
        self._closed = False
        self._warned = False

    def refusal(self) -> str | None:
        """None while there is room, else why intake is closed (one line)."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self.recheck_s:
                self._refusal = self._read()
                self._checked = now
            return self._refusal

    def known(self) -> bool:
        """Whether refusal() would answer from its last reading, without asking Redis."""
        return time.monotonic() - self._checked < self.recheck_s

    def check(self) -> None:
        """Raise QueueFull while intake is closed for memory."""
        why = self.refusal()
        if why is not None:
            raise QueueFull(why)

    def recheck(self) -> None:
        """Read INFO memory again at the next question (after Redis refused a write)."""
        with self._lock:
            self._checked = float("-inf")

    @contextlib.contextmanager
    def translating(self, accepted: list[str] | None = None) -> Iterator[None]:
        """Turn Redis's own out-of-memory reply into QueueFull (`accepted`: ids stored before it)."""
        try:
            yield
        except redis.OutOfMemoryError:
            self.recheck()
            raise QueueFull("Redis refused new mail: it is at its maxmemory; delivery frees memory, "
                            "try again later", accepted) from None

    def _read(self) -> str | None:
        try:
            info = self._client.info("memory")
            used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
            policy = info.get("maxmemory_policy")
        except (redis.RedisError, ValueError, TypeError) as exc:
            # The write that follows reports a Redis that is down; a Redis that will not say
            # (ACL, managed service) leaves only its own out-of-memory reply to go by.
            if not self._warned and isinstance(exc, redis.ResponseError):
                self._warned = True
                log.warning("cannot read Redis memory use (%s): the memory guard relies on Redis's own refusals",
                            exc)
            return None
        if isinstance(policy, bytes | str) and policy not in ("noeviction", b"noeviction"):
            # Checked at connect only, it was set to evict later (CONFIG SET in a hurry): new
            # mail would be taken into a Redis that drops queued mail when full.
            self._closed = True
            shown = policy.decode("utf-8", "replace") if isinstance(policy, bytes) else policy
            return (f"Redis now has maxmemory-policy {shown[:40]!r}: it would evict queued mail when full; "
                    f"new mail is refused until it is set back to noeviction")
        line = self.fraction - (REOPEN_MARGIN if self._closed else 0.0)
        self._closed = limit > 0 and used >= line * limit
        if not self._closed:
            return None
        return (f"Redis memory is at {used * 100 / limit:.0f}% of its maxmemory ({_mb(used)} of {_mb(limit)}), "
                f"over DRAIN_MAX_MEMORY_FRACTION={self.fraction:g}: new mail is refused until delivery frees memory")
