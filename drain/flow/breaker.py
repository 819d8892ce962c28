"""Per-destination circuit breakers, shared by all workers through Redis.

A destination (recipient domain) that fails transiently `threshold` times in a row is not
tried for a cool-down; its mail is held in the deferred set meanwhile, without counting an
attempt, and other destinations keep flowing. After the cool-down one failure opens the
breaker again, for longer (exponential, capped); one success closes it.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis
import tenacity
from tenacity import RetryCallState, Retrying

from drain.settings import Settings
from drain.store import keys
from drain.store.record import DOMAIN

# The breaker name for failures of the relay itself (no SMTP reply at all).
RELAY = "(relay)"
# Other relays' breakers are named this and the relay's URL without credentials.
RELAY_PREFIX = "relay:"


def is_relay(name: str) -> bool:
    """Whether a breaker is a relay's (it opens after DRAIN_RELAY_BREAKER_FAILURES)."""
    return name == RELAY or name.startswith(RELAY_PREFIX)

class Breakers:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.threshold = settings.breaker_failures
        self.relay_threshold = settings.relay_breaker_failures
        self.wait = tenacity.wait_exponential(multiplier=settings.breaker_cooldown_s, max=settings.breaker_max_s)
        self.open_until: dict[str, float] = {}
        self.failing: set[str] = set()

    def queue(self, pipe: redis.client.Pipeline) -> int:
        """Every breaker, read once per claim with the claim's other reads (drain.worker.preamble,
        through Gate): open ones and domains with failures on record; returns how many reads."""
        pipe.hgetall(keys.BREAKER_OPEN)
        pipe.hkeys(keys.BREAKER_FAILS)
        pipe.hkeys(keys.BREAKER_TRIPS)
        return 3

    def take(self, replies: list[Any]) -> None:
        """The replies to `queue`'s reads."""
        opened, fails, trips = replies
        self.open_until = {k.decode(): float(v) for k, v in cast(dict[bytes, bytes], opened).items()}
        self.failing = {k.decode() for k in [*fails, *trips]}

    def held_until(self, domain: str, now: float) -> float | None:
        until = self.open_until.get(domain)
        return until if until is not None and until > now else None

    def failure(self, domain: str, now: float | None = None) -> float | None:
        """Count a transient failure; returns the time the breaker stays open to, if it opened."""
        now = time.time() if now is None else now
        self.failing.add(domain)
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(keys.BREAKER_FAILS, domain, 1)
        pipe.hget(keys.BREAKER_TRIPS, domain)
        fails, trips = pipe.execute()
        tripped = int(trips or 0)
        threshold = self.relay_threshold if is_relay(domain) else self.threshold
        if int(fails) < (1 if tripped else threshold):
            return None
        return self.open(domain, now, tripped)

    def open(self, name: str, now: float, tripped: int | None = None) -> float:
        """Open a breaker now (its failures reached the threshold, or the 5xx storm guard of
        drain.worker.storm says so); tripped: how many times it opened before, if known."""
        if tripped is None:
            tripped = int(cast(bytes | None, self.client.hget(keys.BREAKER_TRIPS, name)) or 0)
        state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
        state.attempt_number = tripped + 1
        until = now + float(self.wait(state))
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(keys.BREAKER_OPEN, name, f"{until:.3f}")
        pipe.hincrby(keys.BREAKER_TRIPS, name, 1)
        pipe.hdel(keys.BREAKER_FAILS, name)
        pipe.execute()
        self.open_until[name] = until
        self.failing.add(name)
        return until

    def success(self, domain: str) -> None:
        if domain in self.failing:
            self.failing.discard(domain)
            pipe = self.client.pipeline(transaction=True)
            for key in (keys.BREAKER_FAILS, keys.BREAKER_TRIPS, keys.BREAKER_OPEN):
                pipe.hdel(key, domain)
            pipe.execute()
            self.open_until.pop(domain, None)

    def states(self) -> dict[str, dict[str, float]]:
        """Every destination with a breaker on record: failures, trips, open until."""
        pipe = self.client.pipeline(transaction=False)
        for key in (keys.BREAKER_FAILS, keys.BREAKER_TRIPS, keys.BREAKER_OPEN):
            pipe.hgetall(key)
        fails, trips, opened = (cast(dict[bytes, bytes], r) for r in pipe.execute())
        out: dict[str, dict[str, float]] = {}
        for name, table in (("failures", fails), ("trips", trips), ("open_until", opened)):
            for domain, value in table.items():
                out.setdefault(domain.decode(), {})[name] = float(value)
        return out


# Operator actions on breakers are kept in the audit stream with the quarantine's.
AUDIT_KEPT = 100_000


def close(client: redis.Redis, domain: str, actor: str, note: str = "", now: float | None = None) -> int | None:
    """Close a destination's breaker now, as an operator who knows the far side is fixed:
    its failure record goes, the mail it held is due at once, and the action is audited.
    Returns how many held messages were made due, or None when it had no breaker on record."""
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=True)
    for key in (keys.BREAKER_FAILS, keys.BREAKER_TRIPS, keys.BREAKER_OPEN, keys.RELAY_STORM):
        pipe.hdel(key, domain)  # (RELAY_STORM: a relay refusing everything is trusted again)
    if not any(pipe.execute()):
        return None
    released = 0
    start = 0
    while True:
        page = cast(list[bytes], client.zrange(keys.HELD_BREAKER, start, start + 499))
        if not page:
            break
        pipe = client.pipeline(transaction=False)
        for msg_id in page:
            pipe.hget(keys.message(msg_id.decode()), DOMAIN)
        mine = [m for m, dom in zip(page, pipe.execute(), strict=True)
                if is_relay(domain) or (dom or b"").decode().lower() == domain.lower()]
        if mine:
            pipe = client.pipeline(transaction=False)
            # XX: only mail still in the deferred set (a promotion may have moved it meanwhile).
            pipe.zadd(keys.DEFERRED, dict.fromkeys(mine, now), xx=True)
            pipe.zrem(keys.HELD_BREAKER, *mine)
            pipe.execute()
            released += len(mine)
        start += len(page) - len(mine)
    client.xadd(keys.AUDIT, {"id": f"breaker:{domain}", "action": "breaker-close", "actor": actor,
                             "at": f"{now:.3f}", "note": note, "released": str(released)},
                maxlen=AUDIT_KEPT, approximate=True)
    return released
