"""The audit log: every operator action, who did it, when and why (a capped Redis stream).

Quarantine release and delete (release.lua, one record per message), bulk actions
(act.lua, one record per page of messages moved), breaker close, rate and pause changes
(here) all write to it; `entries` reads it back in one shape."""

from __future__ import annotations

import time
from typing import Any, cast

import redis

from drain.store import keys
from drain.store.store import AUDIT_KEPT


def write(client: redis.Redis, action: str, actor: str, reason: str = "", **details: object) -> None:
    """One audit record: action, actor, reason, time, and any details (None ones left out)."""
    fields = {"action": action, "actor": actor, "reason": reason, "at": f"{time.time():.3f}",
              **{k: str(v) for k, v in details.items() if v is not None}}
    client.xadd(keys.AUDIT, cast(dict[Any, Any], fields), maxlen=AUDIT_KEPT, approximate=True)


def entries(client: redis.Redis, since: float | None = None) -> list[dict[str, Any]]:
    """The audit log from `since` (unix seconds; all when None), oldest first, each record
    as {"time", "actor", "action", "reason", ...}."""
    start = f"{int(since * 1000)}-0" if since is not None else "-"
    found: list[dict[str, Any]] = []
    while True:
        page = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(keys.AUDIT, min=start, max="+", count=1000))
        found += [_entry(values) for _id, values in page]
        if len(page) < 1000:
            return found
        start = "(" + page[-1][0].decode()


def _entry(values: dict[bytes, bytes]) -> dict[str, Any]:
    item: dict[str, Any] = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in values.items()}
    try:
        item["time"] = float(item.pop("at", "0"))
    except ValueError:
        item["time"] = 0.0
    item.setdefault("actor", "")
    item.setdefault("action", "")
    if "reason" not in item:
        item["reason"] = item.pop("note", "")
    return item
