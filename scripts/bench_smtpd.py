"""Acceptance over SMTP: `drain smtpd --processes N` beside Postfix's smtpd, one run.

    .venv/bin/python scripts/bench_smtpd.py --messages 20000 --processes 1,2 --out benchmarks/x.json

Postfix's `smtp-source -s 20 -l 2000` (a connection per message, each recipient unique) into
`drain smtpd` (its own redis-server, as scripts/bench starts it) for each process count, then
into a throwaway Postfix instance's smtpd (its queue, held). A figure counts only when every
message that got a 250 is found: drain's by recipient in Redis, each exactly once; Postfix's in
its hold queue. Needs Postfix (Debian package postfix) and root for the Postfix row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench import listening, redis_server
from bench_postfix import CountingSink, PostfixInstance, _all_held, missing, smtp_source, stored_recipients, version

from drain.demo.sink import free_port

RECIPIENT = "user@example.com"


def drain_row(client: Any, processes: int, messages: int, sessions: int, size: int) -> dict[str, Any]:
    client.flushdb()
    redis_url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    port = free_port()
    env = dict(os.environ, DRAIN_REDIS_URL=redis_url, DRAIN_SMTPD_SMTPUTF8="true", DRAIN_SMTPD_8BITMIME="true",
               DRAIN_SMTPD_MAX_SESSIONS="200")
    cmd = [sys.executable, "-m", "drain", "smtpd", "--listen", f"127.0.0.1:{port}", "--log-level", "WARNING",
           "--processes", str(processes)]
    with listening(cmd, port, env, "drain smtpd"):
        seconds = smtp_source(port, messages, sessions, length=size, recipient=RECIPIENT)
    # -N makes recipient n (from 1) "<n>user@example.com": each one stored exactly once.
    found = sorted(stored_recipients(client))
    expected = sorted(f"{n}{RECIPIENT}" for n in range(1, messages + 1))
    if found != expected:
        raise RuntimeError(f"{messages} messages got 250 from drain smtpd; Redis holds {len(found)} recipients, "
                           f"{len(set(expected) - set(found))} missing, {len(found) - len(set(found))} twice")
    return {"name": f"drain smtpd --processes {processes} -> Redis", "processes": processes, "sessions": sessions,
            "messages": messages, "seconds": round(seconds, 2), "msg_per_s": round(messages / seconds, 1),
            "checked_in_redis": len(found)}


def postfix_row(messages: int, sessions: int, size: int) -> dict[str, Any]:
    with CountingSink() as sink, PostfixInstance(sink.port) as postfix:
        seconds = postfix.inject(messages, sessions, length=size, recipient=RECIPIENT)
        held = _all_held(postfix, messages)
    return {"name": f"Postfix {version()} smtpd -> its queue", "processes": None, "sessions": sessions,
            "messages": messages, "seconds": round(seconds, 2), "msg_per_s": round(messages / seconds, 1),
            "held": held}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts for drain smtpd")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with redis_server() as client:
        for processes in (int(p) for p in args.processes.split(",")):
            rows.append(drain_row(client, processes, args.messages, args.sessions, args.size))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    why_not = missing()
    if why_not is None:
        rows.append(postfix_row(args.messages, args.sessions, args.size))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    postfix = next((r["msg_per_s"] for r in rows if r["processes"] is None), None)
    print(f"smtp-source -s {args.sessions} -l {args.size} -m {args.messages}, load average {os.getloadavg()[0]:.1f}\n")
    print("| server | messages | seconds | msg/s | drain/Postfix |\n|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['msg_per_s'] / postfix:.2f}x" if postfix and r["processes"] is not None else ""
        print(f"| {r['name']} | {r['messages']:,} | {r['seconds']} | {r['msg_per_s']:,} | {ratio} |")
    if why_not is not None:
        print(f"| Postfix smtpd | | | not measured: {why_not} | |")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "postfix_missing": why_not}, indent=2) + "\n")


if __name__ == "__main__":
    main()
