"""The books plus the pace: what `drain status` shows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from drain.breaker import Breakers
from drain.store import Books, Store


@dataclass(frozen=True)
class Status:
    books: Books
    oldest_age_s: float
    rate_per_s: float
    eta_s: float | None
    breakers_open: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = self.books.as_dict()
        out["oldest_age_s"] = round(self.oldest_age_s, 3)
        out["rate_per_s"] = round(self.rate_per_s, 2)
        out["eta_s"] = None if self.eta_s is None else round(self.eta_s, 1)
        out["breakers_open"] = self.breakers_open
        return out


def read(store: Store) -> Status:
    books = store.books()
    rate = store.pace()
    if books.queued == 0:
        eta: float | None = 0.0
    elif rate > 0:
        eta = books.queued / rate
    else:
        eta = None
    now = time.time()
    opened = [d for d, state in Breakers(store.client, store.settings).states().items()
              if state.get("open_until", 0) > now]
    return Status(books, store.oldest_age_s(), rate, eta, sorted(opened))
