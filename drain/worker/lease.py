"""A worker's lease on what it claimed, as the worker sees it: a clock that keeps running
while the process is stopped, and the check that it still holds a message."""

from __future__ import annotations

import time

from drain.store import keys
from drain.store.store import Store

# Share of the lease time after the last lease write a batch made (claim or check) past
# which ownership is checked again before the next message (one round trip).
LEASE_CHECK_AFTER = 0.5


def lease_clock() -> float:
    """Seconds on a clock that keeps running while the process is stopped or the host sleeps
    (CLOCK_BOOTTIME on Linux), so a frozen worker sees how long it was away."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def renewed_holding(store: Store, owner: str, msg_id: str) -> bool:
    """Renew the owner's lease and say whether it still holds the message, in one MULTI."""
    pipe = store.client.pipeline(transaction=True)
    pipe.set(keys.lease(owner), b"1", px=int(store.settings.lease_ttl_s * 1000))
    pipe.hget(keys.INFLIGHT, msg_id)
    _renewed, holder = pipe.execute()
    return holder is not None and holder.decode() == owner
