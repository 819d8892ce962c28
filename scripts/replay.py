"""The incident, replayed: a backlog of N messages (default 1,500,000; about 1% malformed,
of every kind in seeds/bad) drained at an operator-set rate through a relay that throttles
one domain and fails part of the time, while fresh mail keeps arriving and a worker is
killed mid-drain. Reports time to drain, fresh-mail latency, quarantine by reason, Redis
memory and the books. Starts its own redis-server and relay.

Counted at the relay by Message-ID: `lost` (good mail that never got a 250 or a 550 and
is not in quarantine) and every duplicate, each charged to the killed worker that held it
(read from Redis while the worker was stopped, just before the kill). The run fails (exit
1) if anything is lost, a kill is charged more than DRAIN_SETTLE_EVERY duplicates, or a
duplicate is charged to no kill.

    scripts/replay                           # 1,500,000 messages
    scripts/replay --messages 50000 --rate 1500/s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import replay_relay
from bench import redis_server

from drain.demo.seeding import backlog, synthetic, with_message_id
from drain.demo.sink import free_port
from drain.flow import ratelimit
from drain.intake.api import Client, Submission
from drain.settings import Settings
from drain.store import keys
from tests.chaos_kit import Kill, charge, freeze_and_read

THROTTLED = "shop.example.net"
RELAY_STATS = "replay:relay"  # the relay's own counters, written to Redis for the report
FRESH_SEEN = "replay:fresh"
FRESH_REFUSED = "replay:fresh:refused"  # fresh mail the relay refused once (so it waited a retry)


def relay_policy(client: redis.Redis) -> Any:
    """3% of messages get a 451 on their first try, 0.3% a 550, and THROTTLED domain answers
    421 to a tenth of its attempts; fresh mail's arrival times are recorded."""
    lock = threading.Lock()
    failed_once: set[int] = set()
    copies: Counter[str] = Counter()  # 250s given, by Message-ID
    refused: set[str] = set()  # Message-IDs answered 550
    counts = {"attempts": 0, "accepted": 0, "duplicates": 0, "t451": 0, "t550": 0, "t421": 0}

    def flush() -> None:
        with lock:
            snapshot = dict(counts)
        client.hset(RELAY_STATS, mapping=snapshot)

    def policy(mid: str, first_rcpt: str, at: float) -> str | None:
        h = zlib.crc32(mid.encode())
        with lock:
            index = counts["attempts"]
            counts["attempts"] += 1
            if h % 1000 < 3:
                counts["t550"] += 1
                refused.add(mid)
                answer: str | None = "550 5.7.1 refused by policy"
            elif h % 100 < 3 and h not in failed_once:
                failed_once.add(h)
                counts["t451"] += 1
                answer = "451 4.3.0 temporary failure"
            elif first_rcpt.endswith("@" + THROTTLED) and index % 10 == 0:
                counts["t421"] += 1
                answer = "421 4.7.0 too many messages, slow down"
            else:
                answer = None
                counts["accepted"] += 1
                copies[mid] += 1
                if copies[mid] > 1:
                    counts["duplicates"] += 1
        if mid.startswith("<fresh-"):
            if answer is None:
                client.hset(FRESH_SEEN, mid, at)
            else:
                client.hset(FRESH_REFUSED, mid, 1)
        if index % 5000 == 0:
            flush()
        return answer

    def record(path: Path) -> None:
        """Every Message-ID the relay answered 250 (with its count) or 550, for the report."""
        with lock:
            path.write_text(json.dumps({"copies": copies, "refused": sorted(refused)}))

    return policy, flush, record


def serve_relay(port: int, url: str, record_to: Path) -> None:
    """The relay process: replay_relay's asyncio protocol with relay_policy's answers."""
    client = redis.Redis.from_url(url)
    policy, flush, record = relay_policy(client)

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

        async def flusher() -> None:
            while not stop.is_set():
                await asyncio.sleep(1.0)
                flush()

        task = asyncio.create_task(flusher())
        try:
            await replay_relay.serve(port, policy, stop)
        finally:
            task.cancel()

    try:
        asyncio.run(run())
    finally:
        record(record_to)
        flush()


def relay_cpu(relay: subprocess.Popen[bytes]) -> float:
    """Wait for the relay process and return the CPU seconds it used."""
    _pid, _status, usage = os.wait4(relay.pid, 0)
    relay.returncode = 0
    return float(usage.ru_utime + usage.ru_stime)


def redis_cpu(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def message_id(raw: bytes) -> str | None:
    head = raw.split(b"\n\n", 1)[0]
    for line in head.split(b"\n"):
        if line[:11].lower() == b"message-id:":
            return line[11:].strip().decode("ascii", "replace")
    return None


def tracked(items: list[str | None], source: Any) -> Any:
    """The backlog, remembering each good message's Message-ID (None for malformed ones)."""
    for sub in source:
        assert isinstance(sub, Submission)
        raw = sub.message if isinstance(sub.message, bytes) else sub.message.as_bytes()
        items.append(message_id(raw) if sub.recipients else None)
        yield sub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_500_000)
    parser.add_argument("--malformed", type=float, default=0.01)
    parser.add_argument("--rate", default="2000/s", help="operator-set global rate")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--kill-at", type=float, default=0.3, help="kill a worker when this share is done")
    parser.add_argument("--fresh-every", type=float, default=0.5, help="seconds between fresh messages")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--serve-relay", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_relay:
        serve_relay(int(args.serve_relay[0]), args.serve_relay[1], Path(args.serve_relay[2]))
        return
    rate = ratelimit.parse_rate(args.rate)
    with redis_server() as client:
        url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
        port = free_port()
        record_to = Path(tempfile.mkdtemp(prefix="drain-replay-")) / "relay.json"
        relay = subprocess.Popen([sys.executable, __file__, "--serve-relay", str(port), url, str(record_to)])
        relay_url = f"smtp://127.0.0.1:{port}"
        settings = Settings(redis_url=url, relay=relay_url, retry_first_s=10, retry_max_s=60)
        api = Client(client, settings)
        ratelimit.pause(client)
        started = time.time()
        good_mid: list[str | None] = []
        accepted = api.enqueue_many(tracked(good_mid, backlog(args.messages, malformed_share=args.malformed,
                                                              tag="replay")), lane="backlog")
        assert not accepted.rejected, accepted.rejected[:5]
        key_of = {msg_id: m for msg_id, m in zip(accepted.ids, good_mid, strict=True) if m is not None}
        enqueue_s = time.time() - started
        memory_queued = int(client.info("memory")["used_memory"])
        print(f"queued {len(accepted.ids):,} in {enqueue_s:.0f}s; Redis {memory_queued / 2**20:,.0f} MiB",
              file=sys.stderr)
        ratelimit.set_global(client, rate)
        redis_cpu_before = redis_cpu(client)
        ratelimit.resume(client)
        env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=relay_url, DRAIN_RETRY_FIRST="10",
                   DRAIN_RETRY_MAX="60", DRAIN_LEASE_TTL="5")
        workers = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--processes", str(args.processes),
                                    "--log-level", "ERROR"], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        t0 = time.time()
        most_done_s: float | None = None
        kills = 0
        kill_log: list[Kill] = []
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
                    held = freeze_and_read(client, pids[:1]) if pids else None
                    if held is not None:
                        os.kill(pids[0], signal.SIGKILL)  # the pool starts another in its place
                        kills += 1
                        kill_log.append(Kill(pids[0], held[pids[0]]))
                        print(f"killed worker {pids[0]} holding {len(held[pids[0]])} at {done:,} done",
                              file=sys.stderr)
                if now >= next_fresh and books.queued > 0:
                    mid = f"<fresh-{len(fresh_sent)}@drain.example.com>"
                    fresh_sent[mid] = now
                    key_of[api.enqueue(with_message_id(synthetic(len(fresh_sent)), mid))] = mid
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
            relay_cpu_s = relay_cpu(relay)
        books = api.store.books()
        seen = {k.decode(): float(v) for k, v in client.hgetall(FRESH_SEEN).items()}
        refused = {k.decode() for k in client.hkeys(FRESH_REFUSED)}
        latencies = sorted(seen[m] - t for m, t in fresh_sent.items() if m in seen)
        first_try = sorted(seen[m] - t for m, t in fresh_sent.items() if m in seen and m not in refused)
        stats = {k.decode(): int(v) for k, v in client.hgetall(RELAY_STATS).items()}
        findings = {k.decode(): int(v) for k, v in client.hgetall(keys.FINDINGS).items()}
        memory = client.info("memory")
        relay_record = json.loads(record_to.read_text())
        copies = Counter(relay_record["copies"])
        bounced = set(relay_record["refused"])  # (not `refused`: that is the fresh mail refused once)
        quarantined = {key_of.get(i.decode()) for i in client.zrange(keys.QUARANTINE, 0, -1)}
        lost = sorted(m for m in key_of.values() if not (copies[m] or m in bounced or m in quarantined))
        unexplained = charge(kill_log, copies, key_of)
        settle_every = Settings.from_env(env).settle_every
        per_kill = [len(k.charged) for k in kill_log]
        checks = {"lost": not lost, "duplicates_charged_to_kills": not unexplained,
                  f"at_most_{settle_every}_per_kill": all(n <= settle_every for n in per_kill),
                  "kill_hit_a_worker_holding_mail": any(k.held for k in kill_log)}
        result = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        "redis": client.info("server")["redis_version"], "date": time.strftime("%Y-%m-%d %H:%M")},
            "messages": args.messages, "rate_set_per_s": rate, "processes": args.processes,
            "enqueue_s": round(enqueue_s, 1), "enqueue_per_s": round(len(accepted.ids) / enqueue_s),
            "drain_s": round(drained_s, 1), "drain_per_s": round(args.messages / drained_s, 1),
            "drain_99_9_percent_s": None if most_done_s is None else round(most_done_s, 1),
            "drain_99_9_percent_per_s": None if not most_done_s else round(0.999 * args.messages / most_done_s, 1),
            "worker_kills": kills, "books": books.as_dict(), "balanced": books.balanced,
            "lost": len(lost), "lost_examples": lost[:10],
            "kills": [{"pid": k.pid, "held": len(k.held), "duplicates_charged": len(k.charged)} for k in kill_log],
            "duplicates": sum(n - 1 for n in copies.values() if n > 1),
            "unexplained_duplicates": unexplained, "checks": checks,
            "quarantine_by_reason": dict(sorted(findings.items(), key=lambda kv: -kv[1])),
            "relay": stats, "relay_cpu_s": round(relay_cpu_s, 1),
            "relay_cpu_us_per_attempt": round(relay_cpu_s * 1e6 / max(1, stats.get("attempts", 0)), 1),
            "redis_cpu_s": round(redis_cpu(client) - redis_cpu_before, 1),
            "fresh_sent": len(fresh_sent), "fresh_delivered": len(latencies),
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
    failed = [name for name, ok in result["checks"].items() if not ok]
    if failed:
        print(f"replay: checks failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
