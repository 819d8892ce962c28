"""A worker's relays: one session per relay, chosen per destination by its route, with the
route's fallbacks tried in order while a relay is down or its breaker is open, and each
relay's own concurrency cap.

A relay that gives no usable session (refused, timed out, TLS, AUTH, a session reply) counts
on its own breaker and the next relay of the route is tried at once for the same message;
a reply about the message itself (2xx, 4xx, 5xx at MAIL, RCPT or DATA) is final for this
attempt, whichever relay gave it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis

from drain.errors import ConfigError
from drain.flow.breaker import RELAY, Breakers
from drain.settings import Settings
from drain.store import keys
from drain.worker.delivery import Relay, RelayConfig, Result, tls_context
from drain.worker.routing import Routes, relay_name
from drain.worker.storm import Storm

log = logging.getLogger(__name__)

# A relay at its concurrency cap: the group waits about this long and asks again.
BUSY_WAIT_S = 0.5


def relay_for(settings: Settings, config: RelayConfig) -> Relay:
    """A session to one relay with the environment's timeouts, TLS and HELO name."""
    return Relay(config, timeout_s=settings.relay_timeout_s, helo_name=settings.hostname,
                 tls=tls_context(settings.relay_tls_verify, settings.relay_ca_file),
                 connect_timeout_s=settings.relay_connect_timeout_s)


@dataclass(frozen=True, slots=True)
class Sent:
    """How a group's send went: the final result and the relay that gave it (empty when every
    relay of the route was at its cap: wait); `failed` names relays that gave no session."""

    result: Result | None
    relay: str
    failed: tuple[tuple[str, Result], ...] = ()


class Relays:
    """The relays of one worker process, kept across its batches."""

    def __init__(self, client: redis.Redis, settings: Settings, default: Relay | None = None,
                 make: Callable[[Settings, RelayConfig], Relay] = relay_for) -> None:
        self.client = client
        self.settings = settings
        self.make = make
        self.routes = Routes(client, settings)
        self.sessions: dict[str, Relay] = {}
        self.configs: dict[str, tuple[str, RelayConfig]] = {}
        self.caps: dict[str, int] = {}
        # Counts not yet written: (key, relay name) -> how many (see `flush`); those on the wire.
        self.counts: dict[tuple[str, str], int] = {}
        self.sending: dict[tuple[str, str], int] = {}
        # The 5xx storm guard (drain.worker.storm), shared by the lanes of a process (runtime).
        self.storm = Storm(client, settings)
        if default is not None:
            # The session given is the environment's relay, whatever its URL.
            self.sessions[RELAY] = default
            self.configs[settings.relay] = (RELAY, default.config)

    def queue(self, pipe: redis.client.Pipeline) -> int:
        """Once per claim, with the claim's other reads (drain.worker.preamble): the routes'
        version (reloaded when it changed), the relays' concurrency caps, and the counts kept
        since the last claim written."""
        pipe.get(keys.ROUTES_VERSION)
        pipe.hgetall(keys.RELAY_CONCURRENCY)
        self.storm.queue(pipe)
        self.sending, self.counts = self.counts, {}
        for (key, name), count in self.sending.items():
            pipe.hincrby(key, name, count)
        return 3 + len(self.sending)

    def undo(self) -> None:
        """The counts sent were not written: kept for the next claim."""
        for item, count in self.sending.items():
            self.counts[item] = self.counts.get(item, 0) + count
        self.sending = {}

    def take(self, replies: list[Any]) -> None:
        """refresh's replies (from `queue`); the first error among them is raised."""
        if any(isinstance(reply, Exception) for reply in replies[3:]):
            self.undo()  # (an increment that did go through is counted twice: counts are a gauge)
        self.sending = {}
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        version, caps, storm = replies[:3]
        self.storm.take(storm)
        self.routes.refresh(cast(bytes | None, version))
        caps = cast(dict[bytes, bytes], caps)
        self.caps = {k.decode("utf-8", "replace"): int(v) for k, v in caps.items() if v.isdigit()}

    def names(self, urls: tuple[str, ...]) -> list[str]:
        """The relay names of a route's URLs, in order (URLs it cannot use are left out, logged)."""
        out: list[str] = []
        for url in urls:
            if url not in self.configs:
                try:
                    config = RelayConfig.from_url(url)
                except ConfigError as exc:
                    log.error("a relay of a route cannot be used: %s", exc)
                    continue
                self.configs[url] = (relay_name(config, self.settings), config)
            out.append(self.configs[url][0])
        return out

    def _session(self, url: str) -> Relay:
        name, config = self.configs[url]
        if name not in self.sessions:
            self.sessions[name] = self.make(self.settings, config)
        return self.sessions[name]

    def send(self, urls: tuple[str, ...], breakers: Breakers, msg_id: str, sender: str, recipients: list[str],
             raw: bytes, smtputf8: bool, now: float) -> Sent:
        """Hand one group to the first relay of the route that is up, falling back in order."""
        failed: list[tuple[str, Result]] = []
        result: Result | None = None
        name = ""
        for url in urls:
            if url not in self.configs and not self.names((url,)):
                continue
            name = self.configs[url][0]
            if breakers.held_until(name, now) is not None:
                continue
            if not self._take(name, msg_id):
                return Sent(None, "", tuple(failed))
            try:
                result = self._session(url).send(sender, recipients, raw, smtputf8)
            finally:
                self._give(name, msg_id)
            result = self.storm.judge(name, _domain(recipients), result, breakers, now)
            if result.kind == "deferred" and (result.relay_fault or result.code == 0):
                failed.append((name, result))
                self.counts[keys.RELAY_FAILED, name] = self.counts.get((keys.RELAY_FAILED, name), 0) + 1
                continue
            self.counts[keys.RELAY_HANDED, name] = self.counts.get((keys.RELAY_HANDED, name), 0) + 1
            return Sent(result, name, tuple(failed))
        if failed:
            name, result = failed.pop()
            return Sent(result, name, tuple(failed))
        return Sent(Result("deferred", 0, "every relay of the route has its breaker open", relay_fault=True),
                    name, ())

    def _take(self, name: str, msg_id: str) -> bool:
        cap = self.caps.get(name, 0)
        if cap <= 0:
            return True
        key = keys.relay_busy(name)
        now = time.time()
        pipe = self.client.pipeline(transaction=True)
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {msg_id: now + self.settings.lease_ttl_s})
        pipe.zcard(key)
        _gone, _added, taken = pipe.execute()
        if int(taken) <= cap:
            return True
        self.client.zrem(key, msg_id)
        return False

    def _give(self, name: str, msg_id: str) -> None:
        if self.caps.get(name, 0) > 0:
            # Redis trouble here must not lose the relay's answer: the slot lapses on its own.
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                self.client.zrem(keys.relay_busy(name), msg_id)

    def flush(self) -> None:
        """Add the relays' counts to Redis now (when the worker stops); kept on Redis trouble."""
        if not self.counts:
            return
        pipe = self.client.pipeline(transaction=False)
        for (key, name), count in self.counts.items():
            pipe.hincrby(key, name, count)
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
            pipe.execute()
            self.counts = {}

    def close(self) -> None:
        self.flush()
        for session in self.sessions.values():
            session.close()


def _domain(recipients: list[str]) -> str:
    """The domain of a group's recipients (one domain a group)."""
    return recipients[0].rpartition("@")[2].lower() if recipients else ""
