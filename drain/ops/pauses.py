"""What is paused, why, by whom and until when.

The pauses themselves are the flags the claim and gate scripts read (keys.PAUSED,
keys.INTAKE_PAUSED, keys.PAUSED_DOMAINS, keys.PAUSED_TENANTS); this keeps, beside them, a note per pause
(keys.PAUSES): reason, actor, since, until. A timed pause of delivery or intake is a key
that expires by itself (claim and the ingress read it), so it resumes on time with no one
running; a timed domain pause is lifted by housekeeping's round once its time has passed
(within a second while workers run, which is when it matters)."""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

from drain.store import books, keys

DELIVERY, INTAKE, DOMAIN, TENANT = "delivery", "intake", "domain", "tenant"


def field(scope: str, name: str | None) -> str:
    return f"{scope}:{name}" if scope in (DOMAIN, TENANT) else scope


def note(client: redis.Redis, scope: str, name: str | None, actor: str, reason: str, until: float | None) -> None:
    doc = {"reason": reason, "actor": actor, "since": round(time.time(), 3),
           "until": round(until, 3) if until is not None else None}
    client.hset(keys.PAUSES, field(scope, name), json.dumps(doc))


def clear(client: redis.Redis, scope: str, name: str | None) -> None:
    client.hdel(keys.PAUSES, field(scope, name))


def _notes(client: redis.Redis) -> dict[str, dict[str, Any]]:
    notes: dict[str, dict[str, Any]] = {}
    for key, value in cast(dict[bytes, bytes], client.hgetall(keys.PAUSES)).items():
        try:
            doc = json.loads(value)
        except ValueError:
            doc = None
        notes[books.text(key)] = doc if isinstance(doc, dict) else {}
    return notes


def listing(client: redis.Redis, now: float | None = None) -> list[dict[str, Any]]:
    """Every pause in force: [{"scope", "name", "reason", "actor", "since", "until"}] (None
    for what was not recorded, e.g. a pause set before notes were kept)."""
    now = time.time() if now is None else now
    notes = _notes(client)
    pipe = client.pipeline(transaction=False)
    pipe.pttl(keys.PAUSED)
    pipe.pttl(keys.INTAKE_PAUSED)
    pipe.smembers(keys.PAUSED_DOMAINS)
    pipe.smembers(keys.PAUSED_TENANTS)
    delivery_ttl, intake_ttl, domains, tenants = pipe.execute()
    rows: list[dict[str, Any]] = []
    for scope, ttl in ((DELIVERY, delivery_ttl), (INTAKE, intake_ttl)):
        if ttl == -2:  # no such key: not paused
            continue
        until = round(now + ttl / 1000, 3) if ttl >= 0 else None
        rows.append(_row(scope, None, notes.get(scope, {}), until))
    for name in sorted(books.text(d) for d in domains):
        doc = notes.get(field(DOMAIN, name), {})
        rows.append(_row(DOMAIN, name, doc, doc.get("until")))
    for name in sorted(books.text(t) for t in tenants):
        rows.append(_row(TENANT, name, notes.get(field(TENANT, name), {}), None))
    return rows


def _row(scope: str, name: str | None, doc: dict[str, Any], until: object) -> dict[str, Any]:
    return {"scope": scope, "name": name, "reason": doc.get("reason"), "actor": doc.get("actor"),
            "since": doc.get("since"), "until": until if isinstance(until, (int, float)) else None}


def lapsed_domains(client: redis.Redis, now: float | None = None) -> list[str]:
    """Paused domains whose timed pause is over."""
    now = time.time() if now is None else now
    paused = {books.text(d) for d in cast(set[bytes], client.smembers(keys.PAUSED_DOMAINS))}
    out = []
    for key, doc in _notes(client).items():
        until = doc.get("until")
        name = key.removeprefix(f"{DOMAIN}:")
        if key.startswith(f"{DOMAIN}:") and name in paused and isinstance(until, (int, float)) and until <= now:
            out.append(name)
    return out
