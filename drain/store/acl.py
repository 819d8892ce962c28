"""Redis ACL users for drain's roles: what each may run and on which keys (`drain acl`).

- producer: queues mail (the API, `drain enqueue`, `drain smtpd`): writes messages and the
  ready lists, adds batch jobs; cannot list or read the quarantine, delete anything, or
  run administrative commands.
- worker: `drain worker` (RQ workers and housekeeping): all of drain's and RQ's keys.
- operator: the `drain` admin commands (pause, rate, quarantine, flush ...): the same keys,
  no server administration (FLUSHALL, CONFIG, DEBUG, SHUTDOWN, ACL, MONITOR ...).
- viewer: the status page and `drain status`: read-only commands on drain's keys.

The rules work on Redis 6.2 and later. A Redis ACL cannot tie a command to a key pattern
before Redis 7 (selectors), so the producer's HGETALL, needed to read the operator rules,
is allowed on every key the producer can write, message hashes included (README).
"""

from __future__ import annotations

import hashlib
import os

from drain.store import keys

ROLES = ("producer", "worker", "operator", "viewer")

# Connection housekeeping every role needs (redis-py's handshake, a health check, SELECT).
_CONNECTION = ("+ping", "+hello", "+select", "+echo", "+client|setname", "+client|getname", "+client|id")

# The producer's keys: the message hashes it writes, the lists and counters of enqueue,
# the flags it reads (pause, intake pause, rules, the global rate: 0 holds delivery, so no
# batch job is queued), the durability marker, and RQ's keys
# for the batch jobs it queues.
_PRODUCER_KEYS = (
    keys.message("*"), keys.SEQ, keys.SEQ_TIME, keys.lane("*", "*"), keys.ring("*") + ":join", keys.READY_COUNT,
    keys.TENANTS, keys.TENANT_SHAPE, keys.PAUSED_TENANTS, keys.TENANT_RATES, keys.SUSPECT, keys.BOOKS, keys.SHAPE,
    keys.FINDINGS, keys.QUARANTINE, keys.RULES, keys.RULE_SEQ, keys.PAUSED, keys.INTAKE_PAUSED, keys.DURABLE,
    keys.RATE, keys.EVENTS, f"{keys.EVENTS}:ix:*", keys.enqueue_mark("*"), keys.CELL_NAME,
)
_PRODUCER_COMMANDS = (
    "+multi", "+exec", "+discard", "+info",
    # enqueue: ids, message hashes, ready lists, books, shape, the acceptance time index;
    # ZADD on the quarantine set only for mail an operator rule sends straight there
    "+incrby", "+incr", "+hset", "+rpush", "+hincrby", "+zadd",
    # reads needed before queueing: rules, pause flags, list lengths for the batch jobs
    "+hgetall", "+get", "+exists", "+llen", "+smembers",
    # RQ's enqueue (rq:queues); WAIT for DRAIN_DURABILITY=replicas
    "+sadd", "+wait",
    # the enqueue script (lua/enqueue.lua), which records the received events too (read
    # back for DRAIN_EVENT_LOG)
    "+evalsha", "+script|load", "+script|exists", "+xadd", "+xtrim", "+append", "+expireat", "+time", "+xrange",
    # it writes a call's events after the stream's last id, and counts a call's chunks stored
    "+xinfo|stream",
    # the enqueue script checks the types of the keys it moves mail through before writing
    "+type",
)
# Read-only commands for the status page (the @read category minus KEYS and the like).
_VIEWER_COMMANDS = ("+@read", "-@dangerous", "+multi", "+exec", "+discard", "+info")


def _all_drain() -> str:
    return f"{keys.PREFIX}:*"


def rules(role: str) -> list[str]:
    """The ACL SETUSER rules of one role, without user name and password."""
    rq_keys = f"~{keys.RQ_PATTERN}"
    channels = f"&{keys.RQ_PATTERN}"  # RQ's worker commands arrive on rq:pubsub:<worker>
    if role == "producer":
        return ["resetkeys", "resetchannels", *(f"~{k}" for k in _PRODUCER_KEYS), rq_keys,
                "-@all", *_CONNECTION, *_PRODUCER_COMMANDS]
    if role in ("worker", "operator"):
        # Everything on drain's and RQ's keys (Lua scripts, RQ's registries, deletes),
        # nothing that administers the server; INFO for the server version.
        return ["resetkeys", "resetchannels", f"~{_all_drain()}", rq_keys, channels,
                "+@all", "-@dangerous", "+info", *_CONNECTION]
    if role == "viewer":
        return ["resetkeys", "resetchannels", f"~{_all_drain()}", "-@all", *_CONNECTION, *_VIEWER_COMMANDS]
    raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")


def user_name(role: str) -> str:
    return f"{keys.PREFIX}-{role}"


def password_rule(role: str) -> str:
    """`#<sha256>` of DRAIN_ACL_<ROLE>_PASSWORD when it is set (the password itself is never
    printed), else a placeholder to replace."""
    secret = os.environ.get(f"DRAIN_ACL_{role.upper()}_PASSWORD")
    if secret:
        return "#" + hashlib.sha256(secret.encode()).hexdigest()
    return f">CHANGE-ME-{role}-password"


def setuser(role: str) -> str:
    """The whole command for one role, to paste into redis-cli."""
    return " ".join(["ACL SETUSER", user_name(role), "reset", "on", password_rule(role), *rules(role)])


def all_roles() -> dict[str, str]:
    return {role: setuser(role) for role in ROLES}
