"""The incident, replayed: a backlog of N messages (default 1,500,000; about 1% malformed,
of every kind in seeds/bad) drained at an operator-set rate through a relay that throttles
one domain and fails part of the time, while fresh mail keeps arriving and a worker is
killed mid-drain. Reports time to drain, fresh-mail latency, quarantine by reason, Redis
memory and the books (lost must be 0). Starts its own redis-server and relay.

    scripts/replay                           # 1,500,000 messages
    scripts/replay --messages 50000 --rate 1500/s
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import redis_server

from drain import keys, ratelimit
from drain.api import Client
from drain.seeding import backlog, synthetic, with_message_id
from drain.settings import Settings
from drain.sink import Received, Sink, free_port

THROTTLED = "shop.example.net"
RELAY_STATS = "replay:relay"  # the relay's own counters, written to Redis for the report
FRESH_SEEN = "replay:fresh"
FRESH_REFUSED = "replay:fresh:refused"  # fresh mail the relay refused once (so it waited a retry)


def relay_policy(client: redis.Redis) -> Any:
    """3% of messages get a 451 on their first try, 0.3% a 550, and THROTTLED domain answers
    421 to a tenth of its attempts; fresh mail's arrival times are recorded."""
    lock = threading.Lock()
    failed_once: set[int] = set()
    seen: set[int] = set()
    counts = {"attempts": 0, "accepted": 0, "duplicates": 0, "t451": 0, "t550": 0, "t421": 0}

    def flush() -> None:
        with lock:
            snapshot = dict(counts)
        client.hset(RELAY_STATS, mapping=snapshot)

    def policy(index: int, msg: Received) -> str | None:
        mid = msg.message_id
        h = zlib.crc32(mid.encode())
        with lock:
            counts["attempts"] += 1
            if h % 1000 < 3:
                counts["t550"] += 1
                answer: str | None = "550 5.7.1 refused by policy"
            elif h % 100 < 3 and h not in failed_once:
                failed_once.add(h)
                counts["t451"] += 1
                answer = "451 4.3.0 temporary failure"
            elif msg.recipients[0].endswith("@" + THROTTLED) and index % 10 == 0:
                counts["t421"] += 1
                answer = "421 4.7.0 too many messages, slow down"
            else:
                answer = None
                counts["accepted"] += 1
                if h in seen and not mid.startswith("<fresh-"):
                    counts["duplicates"] += 1
                seen.add(h)
        if mid.startswith("<fresh-"):
            if answer is None:
                client.hset(FRESH_SEEN, mid, msg.at)
            else:
                client.hset(FRESH_REFUSED, mid, 1)
        if index % 5000 == 0:
            flush()
        return answer

    return policy, flush


def serve_relay(port: int, url: str) -> None:
    client = redis.Redis.from_url(url)
    policy, flush = relay_policy(client)
    with Sink(keep=False, data_policy=policy, port=port):
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        while not done.wait(1.0):
            flush()
        flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_500_000)
    parser.add_argument("--malformed", type=float, default=0.01)
    parser.add_argument("--rate", default="2000/s", help="operator-set global rate")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--kill-at", type=float, default=0.3, help="kill a worker when this share is done")
    parser.add_argument("--fresh-every", type=float, default=0.5, help="seconds between fresh messages")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--serve-relay", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_relay:
        serve_relay(int(args.serve_relay[0]), args.serve_relay[1])
        return
    rate = ratelimit.parse_rate(args.rate)
    with redis_server() as client:
        url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
        port = free_port()
        relay = subprocess.Popen([sys.executable, __file__, "--serve-relay", str(port), url])
        relay_url = f"smtp://127.0.0.1:{port}"
        settings = Settings(redis_url=url, relay=relay_url, retry_first_s=10, retry_max_s=60)
        api = Client(client, settings)
        ratelimit.pause(client)
        started = time.time()
        accepted = api.enqueue_many(backlog(args.messages, malformed_share=args.malformed, tag="replay"),
                                    lane="backlog")
        enqueue_s = time.time() - started
        memory_queued = int(client.info("memory")["used_memory"])
        print(f"queued {len(accepted.ids):,} in {enqueue_s:.0f}s; Redis {memory_queued / 2**20:,.0f} MiB",
              file=sys.stderr)
        ratelimit.set_global(client, rate)
        ratelimit.resume(client)
        env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=relay_url, DRAIN_RETRY_FIRST="10",
                   DRAIN_RETRY_MAX="60", DRAIN_LEASE_TTL="5")
        workers = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--processes", str(args.processes),
                                    "--log-level", "ERROR"], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        t0 = time.time()
        most_done_s: float | None = None
        kills = 0
        fresh_sent: dict[str, float] = {}
        next_fresh = t0
        last_report = t0
        try:
            while True:
                books = api.store.books()
                done = books.delivered + books.bounced + books.quarantined + books.deleted
                now = time.time()
                if kills == 0 and done >= args.kill_at * args.messages:
                    children = subprocess.run(["pgrep", "-P", str(workers.pid)], capture_output=True, text=True)
                    pids = [int(p) for p in children.stdout.split()]
                    if pids:
                        os.kill(pids[0], signal.SIGKILL)  # the pool starts another in its place
                        kills += 1
                        print(f"killed worker {pids[0]} at {done:,} done", file=sys.stderr)
                if now >= next_fresh and books.queued > 0:
                    mid = f"<fresh-{len(fresh_sent)}@drain.example.com>"
                    fresh_sent[mid] = now
                    api.enqueue(with_message_id(synthetic(len(fresh_sent)), mid))
                    next_fresh = now + args.fresh_every
                if now - last_report >= 30:
                    last_report = now
                    print(f"{now - t0:6.0f}s done {done:,} queued {books.queued:,} "
                          f"rate {api.store.pace():,.0f}/s", file=sys.stderr)
                if most_done_s is None and done >= 0.999 * len(accepted.ids):
                    most_done_s = now - t0
                if books.queued == 0:
                    break
                time.sleep(0.05)
        finally:
            drained_s = time.time() - t0
            os.killpg(workers.pid, signal.SIGINT)
            try:
                workers.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(workers.pid, signal.SIGKILL)
            relay.send_signal(signal.SIGTERM)
            relay.wait(timeout=30)
        books = api.store.books()
        seen = {k.decode(): float(v) for k, v in client.hgetall(FRESH_SEEN).items()}
        refused = {k.decode() for k in client.hkeys(FRESH_REFUSED)}
        latencies = sorted(seen[m] - t for m, t in fresh_sent.items() if m in seen)
        first_try = sorted(seen[m] - t for m, t in fresh_sent.items() if m in seen and m not in refused)
        stats = {k.decode(): int(v) for k, v in client.hgetall(RELAY_STATS).items()}
        findings = {k.decode(): int(v) for k, v in client.hgetall(keys.FINDINGS).items()}
        memory = client.info("memory")
        lost = books.accepted - (books.delivered + books.bounced + books.quarantined + books.deleted + books.queued)
        result = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        "redis": client.info("server")["redis_version"], "date": time.strftime("%Y-%m-%d %H:%M")},
            "messages": args.messages, "rate_set_per_s": rate, "processes": args.processes,
            "enqueue_s": round(enqueue_s, 1), "enqueue_per_s": round(len(accepted.ids) / enqueue_s),
            "drain_s": round(drained_s, 1), "drain_per_s": round(args.messages / drained_s, 1),
            "drain_99_9_percent_s": None if most_done_s is None else round(most_done_s, 1),
            "drain_99_9_percent_per_s": None if not most_done_s else round(0.999 * args.messages / most_done_s, 1),
            "worker_kills": kills, "books": books.as_dict(), "balanced": books.balanced, "lost": lost,
            "quarantine_by_reason": dict(sorted(findings.items(), key=lambda kv: -kv[1])),
            "relay": stats, "fresh_sent": len(fresh_sent), "fresh_delivered": len(latencies),
            "fresh_p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "fresh_p99_s": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 3) if latencies else None,
            "fresh_max_s": round(latencies[-1], 3) if latencies else None,
            "fresh_refused_once_by_relay": len(refused),
            "fresh_first_try_p99_s": round(first_try[max(0, int(len(first_try) * 0.99) - 1)], 3) if first_try else None,
            "redis_mib_queued": round(memory_queued / 2**20, 1),
            "redis_mib_peak": round(int(memory["used_memory_peak"]) / 2**20, 1),
            "redis_mib_after": round(int(memory["used_memory"]) / 2**20, 1),
        }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
