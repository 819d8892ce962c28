"""RQ job functions. Their dotted paths live in Redis inside queued jobs: rename with care."""

from __future__ import annotations

from drain.worker import runtime
from drain.worker.batch import Batch
from drain.worker.dispatch import ensure_tokens


def deliver_batch() -> int:
    """Claim and work up to one batch of ready messages; returns how many were claimed."""
    rt = runtime.current()
    batch = Batch(rt.store, rt.relays or rt.relay, rt.owner, rt.limits, rt.severity, rt.rules())
    handled = batch.run()
    ensure_tokens(rt.store.client, rt.settings)
    return handled
