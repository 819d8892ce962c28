"""The baseline the benchmark compares drain with: plain RQ, one job per message.

It does the same work per message as drain (load, validate, deliver over a reused SMTP
connection, count) but pays RQ's per-job cost for every message. Not used in production.
"""

from __future__ import annotations

from drain import validate
from drain.message import Envelope
from drain.settings import Settings
from drain.store import body, keys
from drain.worker.delivery import Relay, RelayConfig

_relay: Relay | None = None


def deliver_one(msg_id: str) -> str:
    from rq import get_current_job

    global _relay
    job = get_current_job()
    assert job is not None
    client = job.connection
    if _relay is None:
        settings = Settings.from_env()
        _relay = Relay(RelayConfig.from_url(settings.relay), timeout_s=settings.relay_timeout_s)
    raw, env = client.hmget(keys.message(msg_id), ["raw", "env"])
    if not isinstance(raw, bytes) or env is None:
        raise LookupError(f"message {msg_id} is not in Redis")
    raw = body.unpack(raw)
    envelope = Envelope.from_json(env)
    verdict = validate.check(raw, envelope)
    kind = _relay.send(envelope.sender, list(envelope.recipients), raw).kind if verdict.ok else "quarantined"
    pipe = client.pipeline()
    pipe.delete(keys.message(msg_id))
    pipe.hincrby(keys.BOOKS, kind, 1)
    pipe.execute()
    return kind
