"""Deferred mail as operators see it: next attempt, attempts so far, last reply."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from drain import keys
from drain.message import Envelope
from drain.store import Store

PAGE = 500


@dataclass(frozen=True)
class Deferred:
    id: str
    next_attempt_at: float
    attempts: int
    last_reply: str
    sender: str
    recipients: list[str]
    accepted_at: float
    history: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "next_attempt_at": self.next_attempt_at, "attempts": self.attempts,
                "last_reply": self.last_reply, "sender": self.sender, "recipients": self.recipients,
                "accepted_at": self.accepted_at, "history": self.history}


def records(store: Store, limit: int | None = None) -> Iterator[Deferred]:
    """Deferred messages, soonest next attempt first."""
    start, yielded = 0, 0
    while True:
        page = cast(list[tuple[bytes, float]], store.client.zrange(keys.DEFERRED, start, start + PAGE - 1,
                                                                   withscores=True))
        if not page:
            return
        pipe = store.client.pipeline(transaction=False)
        for msg_id, _due in page:
            pipe.hmget(keys.message(msg_id.decode()), ["env", "n", "last", "t", "hist"])
        for (msg_id, due), (env, n, last, t, hist) in zip(page, pipe.execute(), strict=True):
            if env is None:
                continue
            envelope = Envelope.from_json(env)
            yield Deferred(msg_id.decode(), float(due), int(n or 0), (last or b"").decode("utf-8", "replace"),
                           envelope.sender, list(envelope.recipients), float(t or 0), json.loads(hist or b"[]"))
            yielded += 1
            if limit is not None and yielded >= limit:
                return
        start += PAGE
