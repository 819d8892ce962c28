"""`drain trace`: find messages by id, Message-ID, sender, recipient or recipient domain in a
time window, and put each one's kept events together as one document.

Finding goes through the lookup index (lookup.py); every event it returns is checked against
what was asked, so a tag that collides never puts a wrong message in the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from drain.store import events, lookup

# What a message's last event says about where it is.
STATE_AFTER = {
    "received": "ready", "released": "ready", "flushed": "ready", "held": "held", "parked": "parked",
    "deferred": "deferred", "quarantined": "quarantined", "delivered": "delivered", "bounced": "bounced",
    "expired": "expired", "deleted": "deleted",
}
# Received events read per round trip when no selector narrows the search.
PAGE = 5000


@dataclass(frozen=True)
class Query:
    id: str | None = None
    message_id: str | None = None
    sender: str | None = None
    recipient: str | None = None  # an address, or @domain
    since: float | None = None
    until: float | None = None

    @property
    def narrowed(self) -> bool:
        return any((self.id, self.message_id, self.sender, self.recipient))


Check = Callable[[dict[str, Any]], bool]


def _selectors(q: Query) -> list[tuple[list[str], Check]]:
    """Index values to look up for each selector, and the check a received event must pass."""
    out: list[tuple[list[str], Check]] = []
    if q.message_id:
        mid = q.message_id.strip()
        forms = {mid, mid if mid.startswith("<") else f"<{mid}>"}
        lowered = {f.lower() for f in forms}
        out.append(([events.BY_MESSAGE_ID + f for f in forms],
                    lambda e: str(e.get("message_id", "")).lower() in lowered))
    if q.sender is not None:
        sender = q.sender.lower()
        out.append(([events.BY_SENDER + sender], lambda e: str(e.get("sender", "")).lower() == sender))
    if q.recipient:
        rcpt = q.recipient.lower()
        if rcpt.startswith("@"):
            domain = rcpt[1:]
            out.append(([events.BY_DOMAIN + domain],
                        lambda e: any(str(r).lower().rpartition("@")[2] == domain for r in e.get("recipients", ()))))
        else:
            out.append(([events.BY_RECIPIENT + rcpt],
                        lambda e: any(str(r).lower() == rcpt for r in e.get("recipients", ()))))
    return out


def _received_ids(client: redis.Redis, since: float, until: float) -> Iterator[str]:
    """Ids of the messages received in the window, read from the stream page by page."""
    start = f"{int(since * 1000)}-0"
    end = f"{int(until * 1000)}-18446744073709551615"
    while True:
        entries = lookup.page(client, start, end, PAGE)
        for doc in events.decode_all(entries):
            if doc["event"] == "received":
                yield str(doc["id"])
        if len(entries) < PAGE:
            return
        start = lookup.after(entries[-1][0])


def find_ids(client: redis.Redis, q: Query, now: float, retention_s: float) -> list[str]:
    """Ids of the messages the query selects, oldest first."""
    since = q.since if q.since is not None else now - retention_s
    until = q.until if q.until is not None else now
    if q.id:
        return [q.id]
    if not q.narrowed:
        return list(dict.fromkeys(_received_ids(client, since, until)))
    found: set[str] | None = None
    order: dict[str, int] = {}  # place in the stream (lookup.read's order: entries share a time)
    for values, check in _selectors(q):
        spots = lookup.where(client, values, lookup.days(since, until))
        ids = set()
        for doc in lookup.read(client, (s for ss in spots.values() for s in ss)):
            if doc["event"] == "received" and since <= doc["time"] <= until + 0.001 and check(doc):
                ids.add(str(doc["id"]))
                order.setdefault(str(doc["id"]), len(order))
        found = ids if found is None else found & ids
    return sorted(found or (), key=lambda i: order.get(i, 0))


def state_after(evs: list[dict[str, Any]]) -> str:
    """Where a message's events left it. An operator's hold (`drain hold`) puts it in
    quarantine, unlike a hold for a rate or a breaker. A message some recipients took
    before the rest bounced or expired counts as delivered, as the books count it."""
    event = evs[-1]
    if event["event"] == "held" and event.get("why") == "operator":
        return "quarantined"
    if event["event"] in ("bounced", "expired") and any(e["event"] == "delivered" for e in evs):
        return "delivered"
    return STATE_AFTER.get(event["event"], "unknown")


def document(msg_id: str, evs: list[dict[str, Any]]) -> dict[str, Any]:
    """One message's trace: {"id","message_id","sender","recipients","tenant","state","events"}."""
    first = next((e for e in evs if e["event"] == "received"), {})
    shown = [{k: v for k, v in e.items() if k not in ("id", "stream_id")} for e in evs]
    return {
        "id": msg_id,
        "message_id": first.get("message_id", ""),
        "sender": first.get("sender", ""),
        "recipients": list(first.get("recipients", [])),
        "tenant": first.get("tenant"),
        "state": state_after(evs) if evs else "unknown",
        "events": shown,
    }


def trace(client: redis.Redis, q: Query, now: float, retention_s: float) -> list[dict[str, Any]]:
    """The trace document of every message the query selects that has kept events."""
    ids = find_ids(client, q, now, retention_s)
    if not ids:
        return []
    kept = lookup.of_messages(client, ids, lookup.days(now - retention_s - 86400, now))
    return [document(i, evs) for i in ids if (evs := kept.get(i))]
