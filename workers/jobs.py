"""RQ job functions. Their dotted paths live in Redis inside queued jobs: rename with care."""

from __future__ import annotations

import logging

from drain.worker import runtime
from drain.worker.dispatch import ensure_tokens
from drain.worker.lanes import deliver
from drain.worker.resilience import TROUBLE, wait_for_redis
from drain.worker.retry import redis_backoff

log = logging.getLogger(__name__)


def deliver_batch() -> int:
    """Claim and work up to one batch of ready messages per lane (DRAIN_RELAY_SESSIONS);
    returns how many were claimed."""
    rt = runtime.current()
    try:
        handled = deliver(rt)
    except TROUBLE as exc:
        # Redis went away mid-batch (a restart; a failover, met on a connection still open to
        # the old master). Each batch has settled or given back what it held before the error
        # left it (drain.worker.batch), so this is no failed job: one line, wait, carry on.
        log.warning("Redis unavailable during a batch (%s); what it had not settled went back to ready", exc)
        wait_for_redis(rt.store.client)
        handled = 0
    redis_backoff()(ensure_tokens, rt.store.client, rt.settings)
    return handled
