"""Limits of the SMTP ingress that hold across its processes: sessions open at once, and
failed AUTH attempts per client address.

Sessions are counted in shared memory, one slot per ingress process (each process writes only
its own; the parent zeroes the slot of a process that died), so the check costs no round trip.
AUTH failures are counted in memory by each process and, for the other processes, in Redis
(one counter per client address that expires with the window): a process refuses an address
once either count reaches the limit.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import redis

from drain.store import keys


class SessionCount:
    """Sessions open in every ingress process: `slots` is shared memory (one int per process,
    e.g. a `multiprocessing.RawArray`) or, for one process, a plain list."""

    def __init__(self, slots: Any = None, index: int = 0) -> None:
        self._slots: Any = slots if slots is not None else [0]
        self.index = index

    @property
    def total(self) -> int:
        return int(sum(self._slots))

    def take(self, cap: int) -> bool:
        """Count one more session unless `cap` are open; whether it was counted. Counting first,
        then looking at the sum, lets two processes racing for the last slot both refuse
        rather than both take it."""
        self._slots[self.index] += 1
        if self.total > cap:
            self._slots[self.index] -= 1
            return False
        return True

    def release(self) -> None:
        self._slots[self.index] -= 1


class AuthGuard:
    """Slows down password guessing: a growing delay after each failed AUTH of a session, the
    session closed after `per_session` failures, and an address refused (at connect and at AUTH)
    once it has `per_address` failures within `window_s`. Kept in memory for at most
    `max_addresses` addresses (the oldest forgotten first); with `shared` (a Redis client, given
    by the ingress) failures are also counted across processes."""

    def __init__(self, delay_s: float = 1.0, per_session: int = 3, per_address: int = 10,
                 window_s: float = 600.0, max_addresses: int = 10_000) -> None:
        self.delay_s = delay_s
        self.per_session = per_session
        self.per_address = per_address
        self.window_s = window_s
        self.max_addresses = max_addresses
        self.shared: redis.Redis | None = None
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        while times and now - times[0] > self.window_s:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def blocked(self, address: str) -> bool:
        """By this process's own count (no I/O)."""
        return len(self._recent(address, time.monotonic())) >= self.per_address

    def failed(self, address: str) -> None:
        now = time.monotonic()
        times = self._recent(address, now)
        self._failures.pop(address, None)
        times.append(now)
        self._failures[address] = times  # newest last: the dict's order is by last failure
        while len(self._failures) > self.max_addresses:
            del self._failures[next(iter(self._failures))]

    def blocked_anywhere(self, address: str) -> bool:
        """By the count of every process (one GET; blocking: run it off the event loop).
        Redis not answering: this process's own count decides."""
        if self.blocked(address):
            return True
        if self.shared is None:
            return False
        try:
            count = self.shared.get(keys.smtpd_auth_failures(address))
        except redis.RedisError:
            return False
        return int(count or 0) >= self.per_address

    def share_failure(self, address: str) -> None:
        """Count a failure for the other processes (one round trip; blocking)."""
        if self.shared is None:
            return
        key = keys.smtpd_auth_failures(address)
        try:
            pipe = self.shared.pipeline(transaction=True)
            pipe.set(key, 0, ex=max(1, math.ceil(self.window_s)), nx=True)
            pipe.incr(key)
            pipe.execute()
        except redis.RedisError:
            pass  # this process's own count still holds
