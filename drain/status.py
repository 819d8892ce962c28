"""The books plus the pace: what `drain status` shows. The ETA and what holds mail back come
from backlog.forecast, the one function the backlog view and the status page use too."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from drain import backlog
from drain.breaker import Breakers
from drain.deferred import deferred_by
from drain.store import Books, Store


@dataclass(frozen=True)
class Status:
    books: Books
    oldest_age_s: float
    rate_per_s: float
    # The longest ETA among domains whose mail moves (None: unknown, or all is held).
    eta_s: float | None
    breakers_open: list[str] = field(default_factory=list)
    # What holds queued mail back: domain (or "*" for all) -> why.
    held_by: dict[str, str] = field(default_factory=dict)
    # The deferred count split by why: held for rate, held by a breaker, deferred by the relay.
    deferred_by: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = self.books.as_dict()
        out["deferred_by"] = self.deferred_by
        out["oldest_age_s"] = round(self.oldest_age_s, 3)
        out["rate_per_s"] = round(self.rate_per_s, 2)
        out["eta_s"] = None if self.eta_s is None else round(self.eta_s, 1)
        out["held_by"] = self.held_by
        out["breakers_open"] = self.breakers_open
        return out


def read(store: Store, shape: backlog.Shape | None = None) -> Status:
    books = store.books()
    rate = store.pace()
    shape = backlog.shape(store, pace=rate) if shape is None else shape
    eta = 0.0 if books.queued == 0 else shape.eta_s
    now = time.time()
    opened = [d for d, state in Breakers(store.client, store.settings).states().items()
              if state.get("open_until", 0) > now]
    # The split is read a moment after the books: fit it to the books' own deferred count,
    # so that its parts always add up to it.
    read_split = deferred_by(store)
    rate_held = min(read_split["rate"], books.deferred)
    breaker_held = min(read_split["breaker"], books.deferred - rate_held)
    split = {"rate": rate_held, "breaker": breaker_held, "relay": books.deferred - rate_held - breaker_held}
    return Status(books, store.oldest_age_s(), rate, eta, sorted(opened), shape.held_by, split)
