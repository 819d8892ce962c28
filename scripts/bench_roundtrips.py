"""The worker's round trips to Redis, by the code that sends them, per claim of a batch.

Each round trip costs redis-server a wake-up of its event loop and a socket read and write
(on this VM more than most commands themselves: benchmarks/redis-roundtrips-session8-*.md),
so what counts is how many there are and who sends them. This run drains a backlog with
`drain worker --burst` in a child process whose redis-py connections note every request they
send (one `send_packed_command`: a command, or a whole pipeline), with the commands in it and
the code that sent it: the innermost frame in drain (or workers/) and the innermost in RQ.
The claims are the claim script's calls; every row is given per claim and per message.

    .venv/bin/python scripts/bench_roundtrips.py --messages 5000 --size 2048 [--out benchmarks/x.md]
"""

from __future__ import annotations

import argparse
import collections
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

# Run in the worker's process: note each request, then start `drain worker` as `python -m drain` would.
BOOTSTRAP = r'''
import os, re, sys, threading, traceback, runpy
import redis.connection as rc
_log = os.environ["DRAIN_RT_LOG"]
_files = {}
_name = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n(?:\$\d+\r\n([^\r]*)\r\n)?")
_send = rc.AbstractConnection.send_packed_command

def _site(stack):
    drain, rq = [], ""
    for frame in reversed(stack):
        path = frame.filename.replace(os.sep, "/")
        if len(drain) < 2 and ("/drain/" in path or "/workers/" in path) and "/site-packages/" not in path:
            drain.append(f"{path.split('/')[-2]}/{path.split('/')[-1]}:{frame.name}")
        if not rq and "/site-packages/rq/" in path:
            rq = f"rq/{path.split('/')[-1]}:{frame.name}"
        if len(drain) == 2 and rq:
            break
    return " < ".join(drain), rq

def send_packed_command(self, command, check_health=True):
    data = command if isinstance(command, (bytes, bytearray)) else b"".join(bytes(c) for c in command)
    names = [(n.decode().lower(), (k or b"")[:40].decode(errors="replace")) for n, k in _name.findall(data)]
    drain, rq = _site(traceback.extract_stack(limit=40)[:-1])
    pid = os.getpid()
    out = _files.get(pid)
    if out is None:
        out = _files[pid] = open(f"{_log}.{pid}", "a", buffering=1)
    out.write(repr((threading.get_ident(), drain, rq, names)) + "\n")
    return _send(self, command, check_health)

rc.AbstractConnection.send_packed_command = send_packed_command
sys.argv = ["drain", *sys.argv[1:]]
runpy.run_module("drain", run_name="__main__", alter_sys=True)
'''
# A key's parts that name an id (they hold a digit): written '#'.
_ID = re.compile(r"(?<=:)[^:]*\d[^:]*")
# A claim's round trip: the claim script's EVALSHA; a write to the delivery journal.
CLAIM_SCRIPT = "claim"
JOURNAL_WRITE = "rpush drain:journal:"


def script_names() -> dict[str, str]:
    folder = Path(scripts.__file__).parent / "lua"
    names = [p.stem for p in folder.glob("*.lua") if p.stem != scripts.PRELUDE]
    return {hashlib.sha1(scripts.source(n).encode()).hexdigest(): n for n in names}


def shape(names: list[tuple[str, str]], shas: dict[str, str]) -> str:
    """The commands of one request, ids written '#', runs of the same command counted."""
    words: list[str] = []
    for name, arg in names:
        word = f"script {shas.get(arg, arg[:8])}" if name == "evalsha" else f"{name} {_ID.sub('#', arg)}".strip()
        if words and words[-1].split(" x")[0] == word:
            head, _x, count = words[-1].rpartition(" x")
            words[-1] = f"{head} x{int(count) + 1}" if count.isdigit() and head == word else f"{word} x2"
        else:
            words.append(word)
    return ", ".join(words)


def run(count: int, size: int, processes: int, relay: str, env_extra: dict[str, str]) -> dict[str, Any]:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    shas = script_names()
    with tempfile.TemporaryDirectory() as folder:
        server = spawn_on_port(port, Path(folder))
        try:
            client = redis.Redis(port=port)
            ratelimit.pause(client)
            Client.connect(Settings(redis_url=url, relay=relay)).enqueue_many(
                [synthetic(i, size=size) for i in range(count)])
            ratelimit.resume(client)
            log = str(Path(folder) / "rt")
            env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=relay, DRAIN_RT_LOG=log, **env_extra)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", BOOTSTRAP, "worker", "--burst", "--processes", str(processes),
                            "--log-level", "ERROR"], env=env, stdout=subprocess.DEVNULL, check=True, timeout=600)
            seconds = time.perf_counter() - started
            delivered = int(client.hget(keys.BOOKS, "delivered") or 0)
            rows: collections.Counter[tuple[str, str, str]] = collections.Counter()
            for path in Path(folder).glob("rt.*"):
                for line in path.read_text().splitlines():
                    _thread, drain, rq, names = eval(line, {})  # our own repr() of plain tuples
                    rows[(drain, rq, shape(names, shas))] += 1
        finally:
            server.terminate()
            server.wait()
    claims = sum(n for (_d, _r, what), n in rows.items() if what.startswith(f"script {CLAIM_SCRIPT}"))
    total = sum(rows.values())
    journal = sum(n for (_d, _r, what), n in rows.items() if what.startswith(JOURNAL_WRITE))
    table = [{"drain": d, "rq": r, "commands": w, "count": n, "per_claim": round(n / max(1, claims), 2),
              "per_msg": round(n / max(1, delivered), 4)} for (d, r, w), n in rows.most_common()]
    return {"size": size, "messages": count, "delivered": delivered, "processes": processes, "env": env_extra,
            "seconds": round(seconds, 2), "claims": claims, "round_trips": total, "journal_writes": journal,
            "others_per_msg": round((total - journal) / max(1, delivered), 4),
            "per_claim": round(total / max(1, claims), 2), "per_msg": round(total / max(1, delivered), 4),
            "rows": table}


# What sent a request, by the first pattern found in its row (code sites, then commands).
KINDS = (
    ("journal write", lambda d, r, w: w.startswith(JOURNAL_WRITE)),
    ("claim script", lambda d, r, w: w.startswith(f"script {CLAIM_SCRIPT}")),
    ("settle at a claim's end (deliver/settle script)", lambda d, r, w: w.startswith(("script deliver",
                                                                                       "script settle"))),
    ("housekeeping (time-based)", lambda d, r, w: "housekeeping" in d or ("promote_due" in d and not r)
     or "reap_dead" in d or "lifetime" in d),
    ("connections, start and stop", lambda d, r, w: w.startswith(("hello", "ping", "client", "info server"))
     or "start_worker" in r or "register_" in r or "teardown" in d or "subscribe" in r),
    ("RQ job lifecycle", lambda d, r, w: bool(r) and "rq/job.py:_execute" not in r),
    ("per job, drain (rules, tokens)", lambda d, r, w: "rules" in d or "ensure_tokens" in d),
    ("per claim, drain reads", lambda d, r, w: any(x in d for x in ("preamble", "refresh", "constrained",
                                                                     "alone.py", "backlog_beyond", "store.py:load",
                                                                     "tenants", "_held_due_in", "next_due"))),
)


def kinds(result: dict[str, Any]) -> list[tuple[str, int]]:
    """The requests added up by what sent them (KINDS; the rest: other)."""
    out: dict[str, int] = {}
    for row in result["rows"]:
        kind = next((k for k, test in KINDS if test(row["drain"], row["rq"], row["commands"])), "other")
        out[kind] = out.get(kind, 0) + row["count"]
    return sorted(out.items(), key=lambda kv: -kv[1])


def markdown(result: dict[str, Any], least: int = 2) -> str:
    """The requests by what sent them, then by code site; per second of the run's wall time
    (the workers' start and stop included: time-based requests, such as the housekeepers',
    come per second, the others per claim)."""
    seconds = max(result["seconds"], 1e-9)
    lines = [f"{result['size']} B, {result['delivered']} delivered, {result['processes']} worker processes "
             f"{result['env'] or ''}, {result['seconds']} s: {result['claims']} claims, {result['round_trips']} "
             f"round trips = {result['per_claim']} per claim, {result['per_msg']} per message; of them "
             f"{result['journal_writes']} journal writes, the others {result['others_per_msg']} per message "
             f"= {round(result['others_per_msg'] * 100, 2)} per 100 messages", "",
             "| sent for | requests | per 100 messages | per second |", "|---|---|---|---|",
             *(f"| {kind} | {count} | {round(count * 100 / max(1, result['delivered']), 2)} | "
               f"{round(count / seconds, 1)} |" for kind, count in kinds(result)), "",
             "| sent from (drain) | (rq) | commands of the request | count | per claim | per msg | per s |",
             "|---|---|---|---|---|---|---|",
             *(f"| {r['drain']} | {r['rq']} | {r['commands'][:160]} | {r['count']} | {r['per_claim']} | "
               f"{r['per_msg']} | {round(r['count'] / seconds, 1)} |" for r in result["rows"] if r["count"] >= least),
             "", f"(requests sent fewer than {least} times left out; the JSON has them all)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, default in (("--messages", 5000), ("--size", 2048), ("--processes", 2)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the worker (repeatable)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import smtp_sink  # scripts/bench.py: Postfix's smtp-sink when installed

    extra = dict(item.split("=", 1) for item in args.env)
    with smtp_sink(True) as (relay, _name):
        result = run(args.messages, args.size, args.processes, relay, extra)
    text = markdown(result)
    print(text)
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
