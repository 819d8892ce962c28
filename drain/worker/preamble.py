"""What a batch reads from Redis once per claim, sent in one round trip after the claim.

Each round trip costs redis-server a wake-up of its event loop and a socket read and write,
on this machine more than the small reads themselves (benchmarks/redis-roundtrips-session8-*.md).
A claim used to be followed by five: the breakers, which domains are limited, the routes'
version and relays' caps (with the relays' counts), the claimed messages, and whether the
job should claim again. Now each of those is a `Part` that puts its commands on one
pipeline and takes its replies back, read as fresh as before: after the claim, before the
claim's first message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import redis

from drain.store.store import Damaged, Store, Stored
from drain.worker.routing import TENANT

_TENANT = TENANT.encode()


class Part(Protocol):
    def queue(self, pipe: redis.client.Pipeline) -> int:
        """Put this part's commands on the pipeline; returns how many."""

    def take(self, replies: list[Any]) -> None:
        """Its replies, in order (a failed command's is the error: raise it, or decode it)."""

    def undo(self) -> None:
        """The round trip failed: keep what `queue` took for the next one."""


def read(client: redis.Redis, parts: Sequence[Part]) -> None:
    """Every part's reads in one round trip; the first error a part raises is raised, once
    every part has taken its replies."""
    pipe = client.pipeline(transaction=False)
    counts = [part.queue(pipe) for part in parts]
    try:
        replies = pipe.execute(raise_on_error=False)
    except BaseException:
        for part in parts:
            part.undo()
        raise
    at, error = 0, None
    for part, count in zip(parts, counts, strict=True):
        try:
            part.take(replies[at:at + count])
        except Exception as exc:  # the other parts still take theirs (the relays' counts written)
            error = error or exc
        at += count
    if error is not None:
        raise error


class Loaded:
    """The claimed messages' data (Store.load's reads, in the shared round trip) and their tenants."""

    def __init__(self, store: Store, ids: Sequence[str]) -> None:
        self.store = store
        self.ids = ids
        self.messages: list[Stored | Damaged | None] = []
        self.tenants: dict[str, str] = {}

    def queue(self, pipe: redis.client.Pipeline) -> int:
        self.store.load_on(pipe, self.ids)
        return len(self.ids)

    def take(self, replies: list[Any]) -> None:
        self.messages = self.store.loaded(self.ids, replies)
        for msg_id, found in zip(self.ids, replies, strict=True):
            if isinstance(found, dict) and isinstance(found.get(_TENANT), bytes):
                self.tenants[msg_id] = found[_TENANT].decode("utf-8", "replace")

    def undo(self) -> None:
        pass
