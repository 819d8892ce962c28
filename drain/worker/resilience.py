"""How a worker rides out a Redis restart or failover without losing or stranding mail.

- Settling is repeated until Redis answers (with drain.retry.redis_backoff): the settle
  script skips outcomes for messages the owner no longer holds, so a repeat is harmless
  (a settle whose reply was lost is not counted twice).
- All of this needs redis-py's own retry off (drain.store.connection does that): a client
  that silently re-sends a claim whose reply was lost leaves the first claim's ids in flight
  under a live worker, where no reaper takes them until the worker stops.
- A claim is not repeated blindly: a claim whose reply was lost has still moved ids to in
  flight under this owner. Between batches a worker holds nothing, so after a failed claim
  it waits for Redis and gives back whatever it finds under its name ("strays").
- Leases lapse while Redis is down (they expire by the clock). Right after a restart every
  lease looks dead, so reaping waits until the server has been up for two lease times:
  live workers renew within a third of one, and only the dead stay unrenewed.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from drain.store.store import Claim, Outcome, Store
from drain.worker.retry import redis_backoff

log = logging.getLogger(__name__)

TROUBLE = (redis.ConnectionError, redis.TimeoutError)


def wait_for_redis(client: redis.Redis) -> None:
    """Return once Redis answers a PING, retrying with backoff (each wait logged)."""
    redis_backoff()(client.ping)


def server_uptime_s(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("server")
    return float(info.get("uptime_in_seconds", 0))


class ResilientStore(Store):
    """The worker's Store: claims and settles that survive Redis going away and coming back."""

    def claim(self, owner: str, want: int, *args: Any, **kwargs: Any) -> Claim:
        try:
            return super().claim(owner, want, *args, **kwargs)
        except TROUBLE as exc:
            log.warning("claim failed, Redis unavailable (%s); waiting for it", exc)
            wait_for_redis(self.client)
            strays = self.give_back(owner)
            if strays:
                log.warning("gave back %d message(s) claimed while the reply was lost", strays)
            return Claim([])

    def narrow(self, owner: str, msg_id: str, rest: Any, partly: bool, accepted: str = "",
               refused: str = "") -> bool:
        """Narrowing after a send must not be lost to a Redis outage (the groups already sent
        would go again): repeated until Redis answers; a repeat changes nothing more."""
        try:
            return super().narrow(owner, msg_id, rest, partly, accepted, refused)
        except TROUBLE as exc:
            log.warning("narrowing message %s failed, Redis unavailable (%s); repeating it", msg_id, exc)
        done: bool = redis_backoff()(super().narrow, owner, msg_id, rest, partly, accepted, refused)
        return done

    def settle(self, owner: str, outcomes: Any) -> tuple[int, int]:
        try:
            return super().settle(owner, outcomes)
        except TROUBLE as exc:
            log.warning("settle failed, Redis unavailable (%s); repeating it until Redis answers", exc)
        result: tuple[int, int] = redis_backoff()(super().settle, owner, outcomes)
        if result[1]:
            # The settle script is atomic: a first try that ran recorded every outcome, and
            # the repeat skips them all. Skipped outcomes are recorded once, never twice.
            log.warning("repeated settle skipped %d outcome(s): recorded by the try whose reply was lost,"
                        " or given back after the lease lapsed", result[1])
        return result

    def give_back(self, owner: str) -> int:
        """Put every message held under `owner` back on the ready list. Only when it holds none knowingly."""
        ids = self.held().get(owner, [])
        if not ids:
            return 0
        settled, _skipped = self.settle(owner, [Outcome(i, "requeue") for i in ids])
        return settled

    def reap_dead(self) -> tuple[int, int]:
        if server_uptime_s(self.client) < 2 * self.settings.lease_ttl_s:
            return (0, 0)  # just restarted: give live workers time to renew their leases
        return super().reap_dead()
