"""What a worker process holds for its jobs: settings, Redis, the relay session, its lease.

The worker installs it at start-up; job functions read it with `current()`.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass

import redis

from drain.delivery import Relay, RelayConfig
from drain.housekeeping import Housekeeper
from drain.settings import Settings
from drain.store import Store
from drain.validate import Limits


@dataclass
class Runtime:
    settings: Settings
    store: Store
    relay: Relay
    owner: str
    limits: Limits
    housekeeper: Housekeeper | None = None

    @classmethod
    def build(cls, client: redis.Redis, settings: Settings) -> Runtime:
        store = Store(client, settings)
        relay = Relay(RelayConfig.from_url(settings.relay), timeout_s=settings.relay_timeout_s)
        owner = f"{socket.gethostname()}-{secrets.token_hex(4)}"
        limits = Limits(
            max_bytes=settings.max_message_bytes,
            max_headers=settings.max_header_count,
            max_mime_depth=settings.max_mime_depth,
            max_mime_parts=settings.max_mime_parts,
            allow_special_domains=settings.allow_special_domains,
        )
        return cls(settings, store, relay, owner, limits)

    def start(self, housekeeping: bool = True) -> None:
        self.store.renew(self.owner)
        if housekeeping:
            self.housekeeper = Housekeeper(self.store, self.owner)
            self.housekeeper.start()

    def stop(self) -> None:
        if self.housekeeper is not None:
            self.housekeeper.stop()
            self.housekeeper = None
        self.relay.close()
        self.store.release_lease(self.owner)


_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no drain runtime in this process: start jobs with `drain worker`")
    return _current
