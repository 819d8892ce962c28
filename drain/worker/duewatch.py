"""When the soonest deferred message is due, as the worker processes of this host last read
it, and when that read was sent: shared by a pool's processes, so that while any of them
claims mail (each claim reads it with its other reads: dispatch.Span), the housekeepers of
all of them ask Redis less often (drain.worker.housekeeping), never trusting a reading older
than their own poll would be.

The readings live in an anonymous shared memory map made when this module is first imported,
before `drain worker` forks its processes: only processes forked from that one see it, so
no other user or host can plant a reading. A slot per Redis server (a hash of its address;
time.monotonic is one clock for the whole host), each written whole with a checksum: a slot
torn by two writers at once, or taken by another server, reads as no reading (a poll then).
"""

from __future__ import annotations

import hashlib
import math
import mmap
import struct

import redis

SLOTS = 64
# A slot: the server's key, when the reading was sent (monotonic), its soonest due time
# (epoch seconds; NaN: nothing deferred), and a checksum of the three.
_SLOT = struct.Struct("<Qdd8s")
_TABLE = mmap.mmap(-1, SLOTS * _SLOT.size)  # MAP_SHARED | MAP_ANONYMOUS: kept across fork


def _check(key: int, at: float, due: float) -> bytes:
    return hashlib.blake2b(struct.pack("<Qdd", key, at, due), digest_size=8).digest()


def server_key(client: redis.Redis) -> int:
    """A number naming the Redis server a client talks to (its address, or its Sentinel service)."""
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    name = "|".join(str(part) for part in (type(pool).__name__, getattr(pool, "service_name", ""),
                                            kwargs.get("host"), kwargs.get("port"), kwargs.get("path"),
                                            kwargs.get("db")))
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") or 1


class DueWatch:
    """The readings of one Redis server's deferred mail, as this host's pool shares them."""

    def __init__(self, key: int) -> None:
        self.key = key
        self.offset = (key % SLOTS) * _SLOT.size

    def read(self) -> tuple[float, float | None] | None:
        """(sent at, soonest due or None) of the latest reading; None when there is none to trust."""
        key, at, due, check = _SLOT.unpack_from(_TABLE, self.offset)
        if key != self.key or check != _check(key, at, due):
            return None
        return at, None if math.isnan(due) else due

    @property
    def at(self) -> float | None:
        found = self.read()
        return None if found is None else found[0]

    @property
    def due(self) -> float | None:
        found = self.read()
        return None if found is None else found[1]

    def saw(self, due: float | None, at: float) -> None:
        """A reading sent at `at` (monotonic): kept unless a later one is already held (a
        race between processes may keep the older: then the watch is quiet for less)."""
        found = self.read()
        if found is not None and found[0] > at:
            return
        stored = math.nan if due is None else due
        _SLOT.pack_into(_TABLE, self.offset, self.key, at, stored, _check(self.key, at, stored))

    def forget(self) -> None:
        _SLOT.pack_into(_TABLE, self.offset, 0, 0.0, 0.0, bytes(8))

    def quiet_for(self, now: float, within: float, wall: float) -> float:
        """How long Redis need not be asked again (seconds; 0: ask now): while the last reading
        was sent less than `within` before `now` (monotonic), until what it says is due
        (`wall`: the epoch time at `now`)."""
        found = self.read()
        if found is None:
            return 0.0
        at, due = found
        left = at + within - now
        if due is not None:
            left = min(left, due - wall)
        return max(0.0, left)


def watch_of(client: redis.Redis) -> DueWatch:
    """The due watch of the Redis server a client talks to."""
    return DueWatch(server_key(client))
