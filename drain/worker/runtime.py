"""What a worker process holds for its jobs: settings, Redis, the relay session, its lease.

The worker installs it at start-up; job functions read it with `current()`.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field

import redis

from drain.intake import rules
from drain.intake.rules import Rule
from drain.settings import Settings
from drain.store.localjournal import LocalJournal
from drain.store.store import Store
from drain.validate import Limits, configured
from drain.worker.audit import AuditedStore
from drain.worker.delivery import Relay, RelayConfig
from drain.worker.housekeeping import Housekeeper
from drain.worker.relays import Relays, relay_for
from drain.worker.routing import not_own_ingress


@dataclass
class Runtime:
    settings: Settings
    store: Store
    relay: Relay
    owner: str
    limits: Limits
    severity: dict[str, str]
    housekeeper: Housekeeper | None = None
    # Every relay this worker uses, by route (the environment's relay among them).
    relays: Relays | None = None
    # The relays of the other lanes of a batch job (DRAIN_RELAY_SESSIONS), each its own sessions.
    extra: list[Relays] = field(default_factory=list)
    _rules: list[Rule] = field(default_factory=list)
    _rules_version: int = -1

    def rules(self) -> list[Rule]:
        """Operator rules, reloaded when they change (one GET per call)."""
        current = rules.version(self.store.client)
        if current != self._rules_version:
            self._rules = rules.load(self.store.client)
            self._rules_version = current
        return self._rules

    def lanes(self) -> list[Relays]:
        """Each lane's relays (drain.worker.lanes): the first lane uses the environment's
        relay session, every other lane sessions of its own, kept across jobs."""
        if self.relays is None:
            self.relays = Relays(self.store.client, self.settings, self.relay)
        while len(self.extra) < self.settings.relay_sessions - 1:
            own = relay_for(self.settings, self.relay.config)
            self.extra.append(Relays(self.store.client, self.settings, own))
            self.extra[-1].storm = self.relays.storm  # one 5xx storm guard a process
        return [self.relays, *self.extra[: self.settings.relay_sessions - 1]]

    @classmethod
    def build(cls, client: redis.Redis, settings: Settings) -> Runtime:
        store = AuditedStore(client, settings)
        relay = relay_for(settings, RelayConfig.from_url(settings.relay))
        for url in settings.relay_fallbacks:
            RelayConfig.from_url(url)  # a fallback drain cannot use stops the start, as DRAIN_RELAY does
        for url in (settings.relay, *settings.relay_fallbacks):
            what = "DRAIN_RELAY" if url == settings.relay else "DRAIN_RELAY_FALLBACK"
            not_own_ingress(url, settings.smtpd_listen, what)  # a loop: mail would come back for ever
        # host-pid-token: which process holds a claim can be told from Redis.
        owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        store.local = LocalJournal.open(client, settings)
        runtime = cls(settings, store, relay, owner, *configured(settings))
        runtime.relays = Relays(client, settings, relay)
        return runtime

    def start(self, housekeeping: bool = True) -> None:
        self.store.renew(self.owner)
        if self.store.local is not None:  # its Redis's token; a process that died here before: its deliveries count
            self.store.local.recover(self.store.client, token_first=True)
        if housekeeping:
            ledger = self.store.ledger if isinstance(self.store, AuditedStore) else None
            self.housekeeper = Housekeeper(self.store, self.owner, ledger=ledger)
            self.housekeeper.start()

    def stop(self) -> None:
        if self.housekeeper is not None:
            self.housekeeper.stop()
            self.housekeeper = None
        self.relay.close()
        if self.relays is not None:
            self.relays.close()
        for relays in self.extra:
            relays.close()
        self.extra = []
        if self.store.local is not None:
            self.store.local.close()
        self.store.release_lease(self.owner)


# A worker's Redis socket timeout exceeds RQ's blocking dequeue (BLMOVE/BLPOP for
# `dequeue_timeout` seconds, worker_ttl - 15 in RQ 3) by this much, so an idle wait for
# work is never cut short as a "Timeout reading from socket".
SOCKET_MARGIN_S = 10


def fit_socket_timeout(client: redis.Redis, dequeue_timeout_s: float) -> float:
    """Raise the client's socket timeout above the blocking dequeue, for the connections
    the pool holds already as well as for new ones; returns the timeout now in force.

    redis-py gives a connection its timeout when the connection object is made (5 s by
    default since redis-py 6), so raising only the pool's settings, as RQ does, leaves a
    connection opened before (the first PING) timing out every idle dequeue."""
    pool = client.connection_pool
    wanted = dequeue_timeout_s + SOCKET_MARGIN_S
    current = pool.connection_kwargs.get("socket_timeout")
    if current is None or current < wanted:
        pool.connection_kwargs["socket_timeout"] = wanted
    pool.reset()  # connections are made again from the settings above
    timeout: float = pool.connection_kwargs["socket_timeout"]
    return timeout


_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no drain runtime in this process: start jobs with `drain worker`")
    return _current
