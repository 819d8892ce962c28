"""What one drain worker process costs per message, by counts that load moves little: one
in-process DrainWorker (burst, housekeeping off) drains N held 2 KB messages (the bench's
size series) into Postfix's smtp-sink (an aiosmtpd sink when Postfix is not installed), once
per DRAIN_RELAY_SESSIONS value given, each run with cold address caches.

Per message: the process's CPU (user and system, every thread: lanes included), voluntary
and involuntary context switches, and the Redis commands the server ran (INFO stats, so RQ's
and drain's together, Lua's own calls included); and the batch jobs RQ ran (how many, how
many found mail, the most messages one job claimed).

    .venv/bin/python scripts/worker_cost.py --messages 10000 --sessions 1,2,1,2
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import redis

import workers.jobs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_postfix
import bench_sizes
import profile_drain
from bench import redis_server, smtp_sink

from drain.settings import Settings
from drain.store import keys
from drain.worker.rqworker import DrainWorker
from drain.worker.runtime import Runtime


def run(client: redis.Redis, settings: Settings, raws: list[bytes]) -> dict[str, float]:
    profile_drain.fill(client, settings, raws)
    count = len(raws)
    commands = int(client.info("stats")["total_commands_processed"])
    calls = _calls(client)
    handled: list[int] = []
    deliver = workers.jobs.deliver

    def counted(rt: Runtime) -> int:  # how many messages each batch job claimed
        handled.append(deliver(rt))
        return handled[-1]

    workers.jobs.deliver = counted
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    try:
        worker = DrainWorker([keys.RQ_QUEUE], connection=client, drain_settings=settings, housekeeping=False)
        worker.work(burst=True, logging_level="WARNING", with_scheduler=False)
    finally:
        workers.jobs.deliver = deliver
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    commands = int(client.info("stats")["total_commands_processed"]) - commands
    calls = {name: n - calls.get(name, 0) for name, n in _calls(client).items()}
    delivered = int(client.hget(keys.BOOKS, "delivered") or 0)
    if delivered != count:
        raise RuntimeError(f"delivered {delivered} of {count}")
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"sessions": settings.relay_sessions, "messages": count, "msg_per_s": round(count / wall, 1),
            "cpu_us_per_msg": round((user + system) / count * 1e6, 1),
            "user_us_per_msg": round(user / count * 1e6, 1), "sys_us_per_msg": round(system / count * 1e6, 1),
            "voluntary_switches_per_msg": round((after.ru_nvcsw - before.ru_nvcsw) / count, 2),
            "involuntary_switches_per_msg": round((after.ru_nivcsw - before.ru_nivcsw) / count, 2),
            "redis_commands_per_msg": round(commands / count, 2),
            # Script calls (claims, settles, ...); LMOVE: one per job (RQ's dequeue), one per claim.
            "evalsha_per_msg": round(calls.get("evalsha", 0) / count, 3),
            "lmove": calls.get("lmove", 0) + calls.get("blmove", 0),
            "jobs": len(handled), "jobs_with_mail": sum(1 for n in handled if n), "most_in_a_job": max(handled)}


def _calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command so far (INFO commandstats)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--sessions", default="1,2", help="comma-separated DRAIN_RELAY_SESSIONS values, run in order")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--out", type=Path, help="write the runs as JSON here")
    args = parser.parse_args()
    raws = [bench_sizes.message(i, args.size) for i in range(args.messages)]
    counting = bench_postfix.tool("smtp-sink") is not None
    results = []
    with redis_server() as client, (bench_postfix.CountingSink() if counting else smtp_sink(False)) as sink:
        relay = sink.url if counting else sink[0]
        url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
        for sessions in (int(s) for s in args.sessions.split(",") if s):
            row = run(client, Settings(redis_url=url, relay=relay, relay_sessions=sessions), raws)
            print(json.dumps(row), flush=True)
            results.append(row)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
