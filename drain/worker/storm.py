"""The 5xx storm guard: a relay that refuses everything must not bounce the whole backlog.

A 5xx about a message or a recipient bounces it, for good. But a relay that turns hostile or
is misconfigured ("554 client host blocked", "550 relaying denied" for every recipient of every
domain) would bounce the whole backlog within minutes. So each process keeps the last
DRAIN_STORM_REPLIES replies of every relay (its lanes share them); when all of them were 5xx
refusals and they span at least DRAIN_STORM_DOMAINS recipient domains, the refusals are taken
as the relay's fault, not the recipients':

- the relay is marked in Redis (keys.RELAY_STORM, seen by every worker at its next claim) and
  its breaker opens, so workers stop sending to it; the operator is told at ERROR, once, with
  how many messages its 5xx bounced before the guard tripped;
- while it is marked, its 5xx defer (a fault of the relay: its breaker counts them, the next
  relay of the route is tried at once) instead of bouncing;
- the mark goes when a delivery through the relay succeeds (the breaker's probe after its
  cool-down) or the operator closes the relay's breaker (`drain breaker close`).

Refusals for one domain only (its mailboxes do not exist) never trip it: they span one domain.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import unicodedata
from dataclasses import dataclass, replace
from typing import Any, cast

import redis

from drain.flow.breaker import Breakers
from drain.settings import Settings
from drain.store import keys
from drain.worker.delivery import Result

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Seen:
    """One reply of a relay, as the guard keeps it: a 5xx refusal or not, for which domain."""

    refused: bool
    domain: str


def clean(text: str, most: int) -> str:
    """Relay text for operators: one line, no control, format or unassigned characters."""
    shown = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return " ".join(shown.split())[:most]


def refusal(result: Result) -> bool:
    """A reply the relay gave about the message that bounces it (not a session's or ours)."""
    return result.kind == "bounced" and not result.relay_fault


def sanitized(result: Result) -> str:
    """The relay's reply, one line without control characters (it is shown to operators)."""
    return clean(f"{result.code} {result.text}".strip(), 200)


class Storm:
    """The guard of one worker process (shared by its lanes)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.size = settings.storm_replies
        self.spread = settings.storm_domains
        self.recent: dict[str, collections.deque[Seen]] = {}
        # 5xx bounces in a row per relay (reset by any other reply): told when the guard trips.
        self.streak: dict[str, int] = {}
        # Relays marked in Redis as refusing everything, read at each claim (`queue`/`take`).
        self.marked: set[str] = set()
        self.lock = threading.Lock()
        # Trips of this process so far, and their count when each lane (thread) queued its read:
        # a read queued before a trip of another lane does not undo that trip's mark.
        # (A trip counts once Redis holds its mark; `pending` trips are being written.)
        self.trips = 0
        self.pending = 0
        self.asked: dict[int, int] = {}

    def queue(self, pipe: redis.client.Pipeline) -> int:
        """The marks, read with each claim's other reads (drain.worker.preamble, through Relays)."""
        pipe.hkeys(keys.RELAY_STORM)
        with self.lock:
            self.asked[threading.get_ident()] = self.trips
        return 1

    def take(self, reply: Any) -> None:
        read = {name.decode("utf-8", "replace") for name in cast(list[bytes], reply)}
        with self.lock:
            tripped_since = self.asked.pop(threading.get_ident(), self.trips) != self.trips
            self.marked = read | self.marked if tripped_since or self.pending else read

    def judge(self, relay: str, domain: str, result: Result, breakers: Breakers, now: float) -> Result:
        """The result to act on for a relay's reply: a 5xx bounce becomes a deferral (a fault of
        the relay) while the relay is marked or when this reply trips the guard."""
        if self.size <= 0 or (result.relay_fault and result.kind == "deferred"):
            return result  # off, or no reply about the message (the relay breaker's business)
        refused = refusal(result)
        with self.lock:
            if relay in self.marked:
                if refused:
                    return _deferred(result)
                if result.kind == "delivered":
                    self._clear(relay)
                return result
            recent = self.recent.setdefault(relay, collections.deque(maxlen=self.size))
            recent.append(Seen(refused, domain.lower()))
            self.streak[relay] = self.streak.get(relay, 0) + 1 if refused else 0
            if not (refused and len(recent) == self.size and all(s.refused for s in recent)
                    and len({s.domain for s in recent}) >= self.spread):
                return result
            bounced = self.streak[relay] - 1  # this one is deferred
            recent.clear()
            self.streak[relay] = 0
            self.marked.add(relay)
            self.pending += 1
        try:
            self._trip(relay, result, bounced, breakers, now)
        finally:
            with self.lock:
                self.pending -= 1
                self.trips += 1
        return _deferred(result)

    def _trip(self, relay: str, result: Result, bounced: int, breakers: Breakers, now: float) -> None:
        reply = sanitized(result)
        record = json.dumps({"reply": reply, "at": round(now, 3), "bounced": bounced})
        try:
            first = bool(self.client.hsetnx(keys.RELAY_STORM, relay, record))
            breakers.open(relay, now)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.error("relay %s refuses everything, but Redis could not be told (%s)", relay, exc)
            return
        if first:
            log.error("relay %s is refusing everything: %s. Its last %d replies were all 5xx over at least %d "
                      "recipient domains: its 5xx now defer instead of bouncing and its breaker is open. "
                      "%d messages were bounced by its 5xx before the guard tripped (bounced mail is final: "
                      "`drain trace --since ...` lists them). It clears when a delivery through it succeeds or "
                      "on `drain breaker close '%s'`.", relay, reply, self.size, self.spread, bounced, relay)

    def _clear(self, relay: str) -> None:
        self.marked.discard(relay)
        try:
            if self.client.hdel(keys.RELAY_STORM, relay):
                log.warning("relay %s accepts mail again: its 5xx bounce again", relay)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("relay %s accepts mail again, but Redis could not be told (%s)", relay, exc)


def _deferred(result: Result) -> Result:
    # (Without the refused recipients: each would bounce on its own code.)
    return replace(result, kind="deferred", relay_fault=True, refused={},
                   text=f"relay refusing everything (storm guard): {result.text}"[:300])


def states(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every relay marked as refusing everything: reply (sanitized), since (epoch s), bounced before."""
    out: dict[str, dict[str, Any]] = {}
    for name, raw in cast(dict[bytes, bytes], client.hgetall(keys.RELAY_STORM)).items():
        try:
            record = json.loads(raw)
            entry = {"reply": clean(str(record.get("reply", "")), 200), "since": float(record.get("at", 0)),
                     "bounced": int(record.get("bounced", 0))}
        except (ValueError, TypeError, AttributeError):
            entry = {"reply": "(unreadable record)", "since": 0.0, "bounced": 0}
        out[clean(name.decode("utf-8", "replace"), 200)] = entry
    return out
