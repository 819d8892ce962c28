"""Cost per message of the SMTP ingress: one `Ingress` in this process (its own redis-server),
Postfix's smtp-source as the client in another process.

    .venv/bin/python scripts/profile_smtpd.py --messages 5000 [--sessions 1] [--out FILE.json]

Two runs after a warm-up: one plain (this process's CPU per message: the ingress and its
Redis client, not redis-server, not the client), one under cProfile on the event loop thread,
with the Redis write (Committer._write, in worker threads) timed by its own thread CPU clock.
The profiled run's figures carry the profiler's overhead: read them as shares.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).parent))

from bench import redis_server
from bench_postfix import smtp_source

from drain.intake.api import Client
from drain.intake.smtpd import Features, Ingress
from drain.intake.smtpd_write import Committer
from drain.settings import Settings

GROUPS = {  # (file fragment, function or "") -> group; first match wins, by exclusive time
    "aiosmtpd: session set-up (hook lookup by inspect)": [("inspect.py", ""), ("~", "<built-in method builtins.dir>")],
    "aiosmtpd: commands and DATA lines": [("aiosmtpd/smtp.py", "")],
    "asyncio: streams, transports, loop": [("asyncio/", "")],
    "MAIL/RCPT address checks": [("drain/validate.py", ""), ("email_validator", ""), ("idna", "")],
    "DATA: prepare and hooks": [("drain/intake/", "")],
}

# Inclusive time of the steps of a session (coroutines: each resumption counted, so a step's
# time covers its own CPU, not the waits).
STEPS = {
    "session set-up (aiosmtpd SMTP.__init__)": ("aiosmtpd/smtp.py", "__init__"),
    "EHLO": ("aiosmtpd/smtp.py", "smtp_EHLO"),
    "MAIL (aiosmtpd parse + drain checks)": ("aiosmtpd/smtp.py", "smtp_MAIL"),
    "RCPT (aiosmtpd parse + drain checks)": ("aiosmtpd/smtp.py", "smtp_RCPT"),
    "DATA (lines read one by one, then the hook)": ("aiosmtpd/smtp.py", "smtp_DATA"),
    "  of which drain's DATA hook (prepare, hand to the writer)": ("drain/intake/smtpd_session.py", "handle_DATA"),
    "  of which Client.prepare (envelope and size checks)": ("drain/intake/api.py", "prepare"),
    "address validation (MAIL/RCPT)": ("drain/validate.py", "address_valid"),
}


def group_of(filename: str, function: str) -> str:
    for group, patterns in GROUPS.items():
        if any(part in filename and (not name or name == function) for part, name in patterns):
            return group
    return "other (logging, stdlib)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-profile", action="store_true", help="the plain run only (CPU per message)")
    args = parser.parse_args()
    write_cpu = [0.0]
    original = Committer._write

    def timed_write(self: Committer, items: Any) -> list[str]:
        started = time.thread_time()
        try:
            return original(self, items)
        finally:
            write_cpu[0] += time.thread_time() - started

    Committer._write = timed_write  # type: ignore[method-assign]
    result: dict[str, Any] = {"messages": args.messages, "sessions": args.sessions, "size": args.size}
    with redis_server() as rclient:
        url = f"redis://127.0.0.1:{rclient.connection_pool.connection_kwargs['port']}/0"
        settings = Settings.from_env({"DRAIN_REDIS_URL": url, "DRAIN_SMTPD_MAX_SESSIONS": "200"})
        api = Client(redis.Redis.from_url(url), settings)
        with Ingress(api, "127.0.0.1", 0, features=Features(True, True), hostname="profile") as ingress:
            smtp_source(ingress.port, 300, args.sessions, length=args.size)  # warm-up
            cpu, wall = time.process_time(), time.perf_counter()
            smtp_source(ingress.port, args.messages, args.sessions, length=args.size)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            result["plain"] = {"seconds": round(wall, 2), "msg_per_s": round(args.messages / wall, 1),
                               "cpu_us_per_msg": round(cpu / args.messages * 1e6, 1)}
            if args.no_profile:
                print(json.dumps(result["plain"]))
                return
            profile = cProfile.Profile(time.thread_time)  # CPU of the loop thread, not wall time
            loop = ingress._loop
            loop.call_soon_threadsafe(profile.enable)
            write_cpu[0] = 0.0
            cpu, wall = time.process_time(), time.perf_counter()
            smtp_source(ingress.port, args.messages, args.sessions, length=args.size)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            loop.call_soon_threadsafe(profile.disable)
            time.sleep(0.2)
        stats = pstats.Stats(profile)
        inclusive: dict[str, float] = {}
        for (filename, _line, function), (_cc, _nc, _tt, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            for label, (part, name) in STEPS.items():
                if part in filename and function == name:
                    inclusive[label] = inclusive.get(label, 0.0) + cumtime
        groups: dict[str, float] = {}
        top = []
        for (filename, _line, function), (_cc, _nc, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            group = group_of(filename, function)
            groups[group] = groups.get(group, 0.0) + tottime
            top.append((tottime, f"{Path(filename).name}:{function}", cumtime))
        top.sort(reverse=True)
        per = 1e6 / args.messages
        result["profiled"] = {"seconds": round(wall, 2), "cpu_us_per_msg": round(cpu * per, 1),
                              "loop_thread_us_per_msg": {g: round(t * per, 1) for g, t in
                                                         sorted(groups.items(), key=lambda kv: -kv[1])},
                              "redis_write_thread_cpu_us_per_msg": round(write_cpu[0] * per, 1),
                              "loop_thread_inclusive_us_per_msg": {k: round(v * per, 1) for k, v in inclusive.items()},
                              "top_exclusive_us_per_msg": [[name, round(t * per, 1)] for t, name, _c in top[:15]]}
    result["load_average"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
