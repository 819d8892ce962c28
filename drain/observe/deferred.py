"""Deferred mail as operators see it: why it waits, next attempt, attempts, last reply.

The deferred set holds three kinds of mail, told apart here: mail held for its domain's
booked send time (rate), mail held by an open circuit breaker (breaker), both without an
attempt counted, and mail the relay deferred (a 4xx reply, or no answer at all).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from redis.exceptions import OutOfMemoryError

from drain.store import keys
from drain.store.record import WAITING, answer, ask
from drain.store.store import Store

PAGE = 500
REASONS = ("rate", "breaker", "relay")
_REPLY = re.compile(r"^\s*(\d{3})\b[\s-]*(.*)$", re.DOTALL | re.ASCII)


def deferred_by(store: Store) -> dict[str, int]:
    """How many deferred messages wait for each reason; they add up to the deferred count."""
    def counts(transaction: bool) -> list[Any]:
        pipe = store.client.pipeline(transaction=transaction)
        for key in (keys.DEFERRED, keys.HELD_RATE, keys.HELD_BREAKER):
            pipe.zcard(key)
        return pipe.execute()

    try:
        replies = counts(True)
    except OutOfMemoryError:  # over maxmemory Redis queues nothing in MULTI: read without (clipped below)
        replies = counts(False)
    total, rate, breaker = (int(v) for v in replies)
    # The held sets can only lag the deferred set (a rule sweep takes mail out of it alone,
    # until housekeeping drops the stale ids), never lead it: clip so the parts add up.
    rate = min(rate, total)
    breaker = min(breaker, total - rate)
    return {"rate": rate, "breaker": breaker, "relay": total - rate - breaker}


def drop_stale(store: Store, now: float, grace_s: float = 60.0) -> None:
    """Forget held ids whose time passed long ago: promotion would have taken them (they left
    the deferred set another way, e.g. swept into quarantine by a rule)."""
    pipe = store.client.pipeline(transaction=False)
    for key in (keys.HELD_RATE, keys.HELD_BREAKER):
        pipe.zremrangebyscore(key, "-inf", now - grace_s)
    pipe.execute()


def _one_reply(text: str) -> dict[str, Any]:
    match = _REPLY.match(text)
    if match:
        return {"code": int(match.group(1)), "text": match.group(2)}
    return {"code": 0, "text": text}


def parse_reply(text: str) -> dict[str, Any] | None:
    """A relay's reply as {"code": int, "text": str}; code 0 when it gave none (no answer).
    A reply recorded per recipient (some took the message, some said later) is stored as a
    JSON object of recipient -> reply: it becomes the first one's code and text, plus
    "recipients": {address: {"code", "text"}}."""
    if not text:
        return None
    if text.startswith("{"):
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and decoded and all(isinstance(v, str) for v in decoded.values()):
            each = {str(r): _one_reply(v) for r, v in decoded.items()}
            first = next(iter(each.values()))
            return {"code": first["code"], "text": first["text"], "recipients": each}
    return _one_reply(text)


@dataclass(frozen=True)
class Deferred:
    id: str
    next_attempt_at: float
    attempts: int
    reason: str
    # The `last` field as stored: the relay's last reply, or for held mail why it is held.
    last_reply: str
    # The relay's last reply, also for held mail (from the attempt history).
    relay_reply: str
    sender: str
    recipients: list[str]
    domain: str
    accepted_at: float
    history: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "reason": self.reason, "next_attempt_at": self.next_attempt_at,
                "attempts": self.attempts, "held_because": self.last_reply if self.reason != "relay" else None,
                "last_reply": parse_reply(self.relay_reply),
                "sender": self.sender, "recipients": self.recipients, "domain": self.domain,
                "accepted_at": self.accepted_at,
                "history": [{**h, "reply": parse_reply(str(h.get("reply", "")))} for h in self.history]}


def records(store: Store, limit: int | None = None, domain: str | None = None,
            reason: str | None = None) -> Iterator[Deferred]:
    """Deferred messages, soonest next attempt first, optionally only one destination domain
    or one reason (rate, breaker, relay)."""
    source = {"rate": keys.HELD_RATE, "breaker": keys.HELD_BREAKER}.get(reason or "", keys.DEFERRED)
    want_domain = domain.lower() if domain else None
    start, yielded = 0, 0
    while True:
        page = cast(list[tuple[bytes, float]], store.client.zrange(source, start, start + PAGE - 1, withscores=True))
        if not page:
            return
        pipe = store.client.pipeline(transaction=False)
        for msg_id, _due in page:
            ask(pipe, msg_id.decode(), WAITING)
            pipe.zscore(keys.HELD_RATE, msg_id)
            pipe.zscore(keys.HELD_BREAKER, msg_id)
            pipe.zscore(keys.DEFERRED, msg_id)
        replies = pipe.execute(raise_on_error=False)
        for index, (msg_id, _due) in enumerate(page):
            stored, in_rate, in_breaker, in_deferred = replies[4 * index:4 * index + 4]
            found = answer(msg_id.decode(), WAITING, [stored])
            if found is None or not isinstance(in_deferred, float):
                continue
            why = "rate" if in_rate is not None else "breaker" if in_breaker is not None else "relay"
            if reason is not None and why != reason:
                continue
            dest = found.domain or found.envelope.domain
            if want_domain is not None and dest.lower() != want_domain:
                continue
            past, text = found.history, found.last_reply
            # A hold overwrites `last` with why it is held; the relay's last word is in the history.
            relay_said = text if why == "relay" else (str(past[-1].get("reply", "")) if past else "")
            yield Deferred(found.id, float(in_deferred), found.attempts, why, text, relay_said, found.envelope.sender,
                           list(found.envelope.recipients), dest, found.accepted_at, past)
            yielded += 1
            if limit is not None and yielded >= limit:
                return
        start += PAGE
