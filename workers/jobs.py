"""RQ job functions. Their dotted paths live in Redis inside queued jobs: rename with care."""

from __future__ import annotations

from drain.worker import runtime
from drain.worker.dispatch import ensure_tokens
from drain.worker.lanes import deliver


def deliver_batch() -> int:
    """Claim and work up to one batch of ready messages per lane (DRAIN_RELAY_SESSIONS);
    returns how many were claimed."""
    rt = runtime.current()
    handled = deliver(rt)
    ensure_tokens(rt.store.client, rt.settings)
    return handled
