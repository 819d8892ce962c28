"""What `enqueue` waits for before it returns (DRAIN_DURABILITY).

- none: Redis has the message in memory (and in its append-only file as its own
  `appendfsync` setting says).
- fsync: the message is on disk. With Redis >= 7.2 each enqueue ends with WAITAOF 1 0;
  an older Redis qualifies only when it runs with `appendonly yes` and
  `appendfsync always` (it then fsyncs every write before replying); otherwise drain
  refuses to start with a ConfigError rather than promise what it cannot keep.
- replicas:N: each enqueue ends with WAIT N; fewer acknowledgements within the timeout
  raise NotDurable. The message *is* stored on the master then: a caller that retries may
  queue it twice (at least once, never silently less).

WAIT and WAITAOF count the writes of the connection they run on, and a connection pool may
hand out another connection than the one that stored the messages; so the wait runs on one
connection right after a small write of its own (INCR of keys.DURABLE), which Redis
executes after the messages' transaction and so covers it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import cast

import redis

from drain.errors import ConfigError, NotDurable
from drain.settings import Settings
from drain.store import keys


@dataclass(frozen=True)
class Plan:
    """How to confirm a write: the command to run after it (none when nothing is needed)."""

    mode: str
    replicas: int = 0
    timeout_ms: int = 1000
    # "waitaof", "wait", or "" (nothing to wait for: mode none, or fsync by appendfsync always).
    command: str = ""
    note: str = ""


def _config(client: redis.Redis, name: str) -> str:
    try:
        reply = cast(dict[str, str], client.config_get(name))
    except redis.ResponseError as exc:
        raise ConfigError(f"DRAIN_DURABILITY=fsync: cannot read Redis setting {name} ({exc})") from None
    return str(reply.get(name, ""))


def _has_waitaof(client: redis.Redis, timeout_ms: int) -> bool:
    try:
        client.execute_command("WAITAOF", 1, 0, timeout_ms)  # type: ignore[no-untyped-call]
    except redis.ResponseError as exc:
        text = str(exc).lower()
        if "unknown command" in text:
            return False
        raise ConfigError(f"DRAIN_DURABILITY=fsync, but Redis refuses WAITAOF: {exc}") from None
    return True


def plan(client: redis.Redis, settings: Settings) -> Plan:
    """Ask the server what the configured durability takes; ConfigError if it cannot be had."""
    mode, replicas = settings.durability
    timeout_ms = max(1, int(settings.durability_timeout_s * 1000))
    if mode == "none":
        return Plan(mode)
    if mode == "replicas":
        return Plan(mode, replicas, timeout_ms, "wait")
    if _has_waitaof(client, timeout_ms):
        return Plan(mode, 0, timeout_ms, "waitaof")
    appendonly, appendfsync = _config(client, "appendonly"), _config(client, "appendfsync")
    if appendonly == "yes" and appendfsync == "always":
        return Plan(mode, 0, timeout_ms, "", note="appendfsync always: every write is on disk before Redis replies")
    raise ConfigError(
        "DRAIN_DURABILITY=fsync needs Redis >= 7.2 (WAITAOF), or appendonly yes with appendfsync always;"
        f" this Redis has no WAITAOF and appendonly {appendonly or '?'}, appendfsync {appendfsync or '?'}"
    )


class Guard:
    """Confirms writes as the plan says; the plan is made on first use (one probe per client)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._plan: Plan | None = None
        self._lock = threading.Lock()

    @property
    def plan(self) -> Plan:
        if self._plan is None:
            with self._lock:
                if self._plan is None:
                    self._plan = plan(self.client, self.settings)
        return self._plan

    def confirm(self) -> None:
        """Return once what was written before this call is as durable as configured."""
        p = self.plan
        if not p.command:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(keys.DURABLE)
        if p.command == "waitaof":
            pipe.execute_command("WAITAOF", 1, 0, p.timeout_ms)  # type: ignore[no-untyped-call]
        else:
            pipe.execute_command("WAIT", p.replicas, p.timeout_ms)  # type: ignore[no-untyped-call]
        _mark, reply = pipe.execute()
        if p.command == "waitaof":
            local = int(cast(list[int], reply)[0])
            if local < 1:
                raise NotDurable(f"stored, but Redis did not confirm the fsync within {p.timeout_ms} ms")
        elif int(reply) < p.replicas:
            raise NotDurable(f"stored, but only {int(reply)} of {p.replicas} replica(s) confirmed it"
                             f" within {p.timeout_ms} ms")
