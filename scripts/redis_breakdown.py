"""Which top-level Redis commands the drain side sends, and what each costs inside Redis, from
SLOWLOG (`scripts/bench --only cells ... --slowlog`).

With slowlog-log-slower-than 0 Redis logs every command a client sends, with its duration
(microseconds, the command's own execution: for EVALSHA the whole script, inner commands
included) and its first arguments. The entries are grouped by command and by what it works
on: an EVALSHA by the drain script its SHA-1 names, any other command by its key with the ids
in it replaced by '#' (drain:msg:#, rq:job:#, ...). Redis 6 (the embedded server) also logs
the commands a script calls, so each script's cost splits by redis.call; Redis 7 does not
log them (the rows then show the scripts whole).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import redis

from drain.store import scripts

# Most entries kept: well above the commands a 10,000-message drain sends.
MOST = 3_000_000
# Keys named by an id (a message, an owner, a tenant...): grouped under their prefix.
_BY_ID = ("drain:msg:", "drain:journal:", "drain:lease:", "drain:lane:fresh:", "drain:lane:backlog:", "rq:job:",
          "rq:worker:", "rq:execution:", "rq:executions:", "rq:results:")
_ID = re.compile(r"[0-9a-f]{8,}(-[0-9a-f]+)*|\d+")
NAMES = ("claim", "settle", "deliver", "reap", "promote", "release", "sweep", "gate", "narrow", "act", "adopt",
         "age", "books", "event", "unpark", "adapt", "enqueue")


# Socket reads and writes redis-server made (INFO stats), at start: each read is a wake-up of
# its event loop, which costs it about as much as a small command.
_IO: dict[int, tuple[int, int]] = {}


def _io(client: redis.Redis) -> tuple[int, int]:
    stats = client.info("stats")
    return int(stats.get("total_reads_processed", 0)), int(stats.get("total_writes_processed", 0))


def start(clients: Sequence[redis.Redis]) -> None:
    """Log every command from now on."""
    for client in clients:
        _IO[id(client)] = _io(client)
        client.config_set("slowlog-max-len", MOST)
        client.config_set("slowlog-log-slower-than", 0)
        client.slowlog_reset()


def _shas() -> dict[str, str]:
    found = {}
    for name in NAMES:
        try:
            text = scripts.source(name)
        except FileNotFoundError:
            continue
        found[hashlib.sha1(text.encode("utf-8")).hexdigest()] = name
    return found


def _target(args: Sequence[str]) -> str:
    """What a command works on: its key with ids replaced by '#'."""
    if len(args) < 2 or args[0].lower() in ("multi", "exec"):
        return ""
    key = args[1]
    for prefix in _BY_ID:
        if key.startswith(prefix):
            return prefix + "#"
    return _ID.sub("#", key)


def collect(clients: Sequence[redis.Redis], count: int) -> list[dict[str, Any]]:
    """Stop logging; rows of (command, target, where: 'client' or the script it ran in, calls
    per message, µs per message, µs per call) over `count` messages, most costly first.

    Redis 6 logs the commands a script calls as well, before the script's own entry (their
    client is '?:0'): each is put down to the script logged next."""
    shas = _shas()
    groups: dict[tuple[str, str, str], list[int]] = {}
    for client in clients:
        client.config_set("slowlog-log-slower-than", 10_000_000)
        reads, writes = _io(client)
        reads0, writes0 = _IO.get(id(client), (reads, writes))
        for name, done in (("(socket reads)", reads - reads0), ("(socket writes)", writes - writes0)):
            row = groups.setdefault(("", name, "server"), [0, 0])
            row[0] += done
        inner: list[tuple[str, str, int]] = []
        for entry in reversed(client.execute_command("SLOWLOG", "GET", -1)):
            args = [a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in entry[3]]
            if not args or args[0].lower() in ("slowlog", "config", "info"):
                continue
            name, usec = args[0].lower(), int(entry[2])
            if entry[4] == b"?:0":
                inner.append((name, _target(args), usec))
                continue
            where = "client"
            if name in ("evalsha", "eval") and len(args) > 1:
                script = shas.get(args[1], args[1][:8])
                for inner_name, target, inner_usec in inner:
                    row = groups.setdefault((inner_name, target, script), [0, 0])
                    row[0] += 1
                    row[1] += inner_usec
                inner = []
                target = script
            else:
                target = _target(args)
            row = groups.setdefault((name, target, where), [0, 0])
            row[0] += 1
            row[1] += usec
        client.slowlog_reset()
    rows = sorted(groups.items(), key=lambda kv: (-kv[1][1], -kv[1][0]))
    return [{"command": name, "target": target, "where": where, "calls_per_msg": round(calls / count, 4),
             "usec_per_msg": round(usec / count, 2), "usec_per_call": round(usec / max(1, calls), 1)}
            for (name, target, where), (calls, usec) in rows]


def markdown(rows: Sequence[dict[str, Any]], top: int = 40) -> str:
    lines = ["| sent by | command | target | calls/msg | µs/msg | µs/call |", "|---|---|---|---|---|---|"]
    for r in [r for r in rows if r["where"] == "server"] + [r for r in rows if r["where"] != "server"][:top]:
        lines.append(f"| {r['where']} | {r['command']} | {r['target']} | {r['calls_per_msg']} | {r['usec_per_msg']} | "
                     f"{r['usec_per_call']} |")
    return "\n".join(lines)
