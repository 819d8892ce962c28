"""`drain show ID`: where one message is now (ready in which lane, in flight with which
owner, deferred until when, held or parked for which domain, quarantined; or done, from its
trace), with its envelope, headers, size, attempts, last reply and history.

Read with one MULTI/EXEC over the places a queued message can be, so that a message moving
meanwhile is seen in one place, not two. LPOS is linear in a list's length: one message's
look-up, not a loop's.
"""

from __future__ import annotations

import time
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

import redis

from drain.errors import InputError
from drain.store import books, keys, lookup, record
from drain.trace import history

_SHOWN = (record.RAW, record.ENVELOPE, record.ACCEPTED, record.DOMAIN, record.ATTEMPTS, record.LAST_REPLY,
          record.HISTORY, record.FINDINGS, record.QUARANTINED, record.TENANT)  # the size: fetch(size=True)
# Headers shown (at most), and the longest value kept of each.
HEADERS_MAX, VALUE_MAX = 50, 500


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else "" if value is None else str(value)


def _lanes(tenant: str) -> list[tuple[str, str]]:
    """The ready lists a message of this tenant can wait on (its tenant's lanes, the suspects,
    and the single lists of a drain from before tenants, until housekeeping adopts them)."""
    return [("fresh", keys.lane("fresh", tenant)), ("backlog", keys.lane("backlog", tenant)),
            ("suspect", keys.SUSPECT), ("backlog", keys.LEGACY_READY[0]), ("fresh", keys.LEGACY_READY[1])]


def _place(client: redis.Redis, msg_id: str, domain: str, tenant: str) -> dict[str, Any]:
    """The message's queued state, or {} when it is in none of the queued places."""
    lanes = _lanes(tenant)
    pipe = client.pipeline(transaction=True)
    books.ask_places(pipe, msg_id)
    for _lane, key in lanes:
        pipe.lpos(key, msg_id)
    pipe.lpos(keys.parked(domain), msg_id)
    owner, quarantined, due, rate, breaker, swept, *positions = pipe.execute()
    if owner is not None:
        return {"state": "in_flight", "owner": _text(owner)}
    if quarantined is not None or swept:
        return {"state": "quarantined"}
    if due is not None:
        if rate is not None or breaker is not None:
            return {"state": "held", "domain": domain, "due": float(due),
                    "why": "rate" if rate is not None else "breaker"}
        return {"state": "deferred", "due": float(due)}
    for (lane, _key), pos in zip(lanes, positions, strict=False):
        if pos is not None:
            return {"state": "ready", "lane": lane, "position": int(pos)}
    if positions[-1] is not None:
        return {"state": "parked", "domain": domain, "position": int(positions[-1])}
    return {}


def headers(raw: bytes) -> list[list[str]]:
    """The header fields as [name, value] pairs (first HEADERS_MAX; values capped)."""
    try:
        parsed = BytesHeaderParser(policy=compat32).parsebytes(raw)
        items = parsed.items()[:HEADERS_MAX]
    except Exception:  # any bytes must give an answer: no headers then
        return []
    return [[str(k), str(v)[:VALUE_MAX]] for k, v in items]


def show(client: redis.Redis, msg_id: str, retention_s: float, now: float | None = None,
         with_raw: bool = False) -> tuple[dict[str, Any], bytes | None]:
    """The `drain show --json` document of one message, and its bytes when asked and kept.
    InputError when drain knows nothing of the id (not queued, no kept events)."""
    now = time.time() if now is None else now
    found = record.fetch(client, [msg_id], _SHOWN, size=True)[0]
    evs = lookup.of_messages(client, [msg_id], lookup.days(now - retention_s - 86400, now))[msg_id]
    traced = history.document(msg_id, evs)
    stored = found is not None and (found.raw is not None or found.accepted_at > 0)
    if not stored and not evs:
        raise InputError(f"unknown message id: {msg_id}")
    doc: dict[str, Any] = {"id": msg_id}
    raw: bytes | None = None
    if stored and found is not None:
        place = _place(client, msg_id, found.domain, found.tenant) or {"state": "ready", "lane": "moving"}
        doc.update(place)
        raw = found.raw
        doc.update({
            "sender": found.envelope.sender, "recipients": list(found.envelope.recipients),
            "tenant": found.tenant or traced.get("tenant"), "size": found.size, "attempts": found.attempts,
            "last_reply": found.last_reply, "accepted_at": found.accepted_at,
            "history": found.history, "headers": headers(raw) if raw else [],
        })
        if place.get("state") == "quarantined":
            doc["reasons"] = found.reasons
        if found.problems:  # what of the stored record could not be read (shown at its defaults)
            doc["damaged"] = list(found.problems)
    else:
        doc.update({"state": traced["state"], "sender": traced["sender"], "recipients": traced["recipients"],
                    "tenant": traced.get("tenant"), "size": next((e.get("size") for e in traced["events"]
                                                                  if e["event"] == "received"), None),
                    "attempts": max((int(e.get("attempt", 0)) for e in traced["events"]), default=0),
                    "last_reply": next((e["reply"] for e in reversed(traced["events"]) if "reply" in e), "")})
    doc["message_id"] = traced["message_id"]
    doc["events"] = traced["events"]
    return doc, (raw if with_raw else None)
