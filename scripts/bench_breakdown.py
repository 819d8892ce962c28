"""Where redis-server's time goes per delivered message on the drain side, by script and command.

INFO commandstats counts every EVALSHA as one command, whichever script it runs. This run
turns on the slow log for every command (slowlog-log-slower-than 0), drains a backlog with
`drain worker --burst` into an SMTP sink, and reads the log back: each EVALSHA entry is named
by its script (the SHA-1 of drain/store/lua/NAME.lua as loaded, prelude included), each other
entry by its command and what it works on (its key, ids in it written '#': drain:msg:#),
with who sent it: a client, or a script (Redis 6 logs a script's redis.call entries just
before the script's own, each is put down to the script logged next; Redis 7 logs none).
What the log does not hold, redis-server CPU (INFO cpu) beyond the time inside commands, is
the event loop and the socket reads and writes of each round trip: their counts per message
(INFO stats total_reads_processed, total_writes_processed) are the first rows.

    .venv/bin/python scripts/bench_breakdown.py --messages 5000 --size 2048 [--out benchmarks/x.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import free_port
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys, scripts
from drain.store.embedded import spawn_on_port

SLOWLOG_MOST = 2_000_000
# Keys named by an id (a message, an owner, a tenant, a job...): counted under their prefix.
BY_ID = ("drain:msg:", "drain:journal:", "drain:lease:", "drain:lane:fresh:", "drain:lane:backlog:", "rq:job:",
         "rq:worker:", "rq:execution:", "rq:executions:", "rq:results:")
_ID = re.compile(r"[0-9a-f]{8,}(-[0-9a-f]+)*|\d+")


def script_names() -> dict[str, str]:
    """SHA-1 of each script as Redis runs it -> its name."""
    folder = Path(scripts.__file__).parent / "lua"
    names = [p.stem for p in folder.glob("*.lua") if p.stem != scripts.PRELUDE]
    return {hashlib.sha1(scripts.source(n).encode()).hexdigest(): n for n in names}


def cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def read_log(client: redis.Redis) -> list[Any]:
    return list(client.execute_command("SLOWLOG", "GET", SLOWLOG_MOST))


def target(argv: list[bytes]) -> str:
    """What a command works on: its key, ids in it written '#'."""
    if len(argv) < 2 or argv[0].lower() in (b"multi", b"exec", b"evalsha"):
        return ""
    key = argv[1].decode(errors="replace")
    prefix = next((p for p in BY_ID if key.startswith(p)), None)
    return prefix + "#" if prefix else _ID.sub("#", key)


def tally(entries: list[Any], shas: dict[str, str]) -> dict[str, list[int]]:
    """(who, what) -> [calls, usec]: who is 'client' or 'lua NAME' (a redis.call of script
    NAME, whose time is inside the script's too); what is the script's name, or the command
    and its key. `entries` as SLOWLOG GET gives them, newest first."""
    out: dict[str, list[int]] = {}
    inner: list[tuple[str, int]] = []  # a script's calls, logged before the script itself
    for entry in reversed(entries):
        usec, argv, addr = int(entry[2]), entry[3], entry[4] if len(entry) > 4 else b""
        command = argv[0].decode(errors="replace").lower()
        if command in ("slowlog", "info", "config"):
            continue
        what = f"{command} {target(argv)}".strip()
        if addr == b"?:0":  # a script's redis.call: the Lua client
            inner.append((what, usec))
            continue
        rows = [("client", what, usec)]
        if command == "evalsha" and len(argv) > 1:
            name = shas.get(argv[1].decode(errors="replace"), "unknown " + argv[1].decode()[:8])
            rows = [("client", "script " + name, usec), *((f"lua {name}", w, u) for w, u in inner)]
            inner = []
        for who, what, spent in rows:
            row = out.setdefault(f"{who}\t{what}", [0, 0])
            row[0] += 1
            row[1] += spent
    return out


def socket_io(client: redis.Redis) -> tuple[int, int]:
    """redis-server's socket reads and writes so far (each read: a wake-up of its event loop)."""
    stats = client.info("stats")
    return int(stats.get("total_reads_processed", 0)), int(stats.get("total_writes_processed", 0))


def drained(client: redis.Redis, url: str, count: int, processes: int,
            relay: str) -> tuple[float, float, int, tuple[int, int]]:
    """Drain the backlog with the slow log on every command: (seconds, redis-server CPU
    seconds, delivered, (socket reads, socket writes))."""
    client.config_set("slowlog-max-len", SLOWLOG_MOST)
    client.config_set("slowlog-log-slower-than", 0)
    client.execute_command("SLOWLOG", "RESET")
    before, io_before = cpu_s(client), socket_io(client)
    env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=relay)
    started = time.perf_counter()
    workers = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--burst", "--processes",
                                str(processes), "--log-level", "ERROR"], env=env, stdout=subprocess.DEVNULL)
    while sum(int(v or 0) for v in client.hmget(keys.BOOKS, ["delivered", "quarantined", "bounced"])) < count:
        if workers.poll() is not None:
            break
        time.sleep(0.05)
    seconds, cpu = time.perf_counter() - started, cpu_s(client) - before
    io = tuple(after - was for after, was in zip(socket_io(client), io_before, strict=True))
    client.config_set("slowlog-log-slower-than", -1)
    workers.wait(timeout=120)
    return seconds, cpu, int(client.hget(keys.BOOKS, "delivered") or 0), (io[0], io[1])


def run(count: int, size: int, processes: int, relay: str) -> dict[str, Any]:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory() as folder:
        server = spawn_on_port(port, Path(folder))
        try:
            client = redis.Redis(port=port)
            ratelimit.pause(client)
            Client.connect(Settings(redis_url=url, relay=relay)).enqueue_many([synthetic(i, size=size)
                                                                                 for i in range(count)])
            ratelimit.resume(client)
            drain_s, cpu, delivered, (reads, writes) = drained(client, url, count, processes, relay)
            rows = tally(read_log(client), script_names())
            rows["server\tsocket reads"], rows["server\tsocket writes"] = [reads, 0], [writes, 0]
        finally:
            server.terminate()
            server.wait()
    per = max(1, delivered)
    inside = sum(u for k, (_c, u) in rows.items() if k.startswith("client\t"))
    table = sorted(({"who": k.split("\t")[0], "what": k.split("\t")[1], "calls_per_msg": round(c / per, 3),
                     "usec_per_msg": round(u / per, 2)} for k, (c, u) in rows.items()),
                   key=lambda r: (r["who"] != "server", r["who"] != "client", r["who"], -r["usec_per_msg"]))
    return {"size": size, "messages": count, "delivered": delivered, "worker_processes": processes,
            "drain_msg_per_s": round(count / drain_s, 1), "redis_cpu_us_per_msg": round(cpu * 1e6 / per, 1),
            "inside_commands_us_per_msg": round(inside / per, 1),
            "outside_commands_us_per_msg": round((cpu * 1e6 - inside) / per, 1), "rows": table}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"{result['size']} B, {result['delivered']} delivered, {result['worker_processes']} worker processes, "
             f"{result['drain_msg_per_s']} msg/s: redis-server CPU {result['redis_cpu_us_per_msg']} µs/msg, "
             f"of which inside commands sent by clients {result['inside_commands_us_per_msg']} µs "
             f"(slow log, wall time inside Redis), the rest {result['outside_commands_us_per_msg']} µs "
             "(event loop, socket reads and writes, the slow log itself)", "",
             "| sent by | script / command | calls/msg | µs/msg |", "|---|---|---|---|",
             *(f"| {r['who']} | {r['what']} | {r['calls_per_msg']} | {r['usec_per_msg']} |" for r in result["rows"]
               if r["usec_per_msg"] >= 0.02 or r["who"] == "server"),
             "", "(rows below 0.02 µs/msg left out; the JSON has them all)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, default in (("--messages", 5000), ("--size", 2048), ("--processes", 2)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import smtp_sink  # scripts/bench.py: Postfix's smtp-sink when installed

    with smtp_sink(True) as (relay, _name):
        result = run(args.messages, args.size, args.processes, relay)
    text = markdown(result)
    print(text)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
        args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
