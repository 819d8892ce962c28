"""Benchmark rows of issue 15 for destinations and routing, against drain's own redis-server,
real worker processes and aiosmtpd sinks (in this process, so every delivery is counted):

  multi-domain: a share of messages addressed to several domains, some domains capped; the
      sends per recipient domain in any one second, at the relay, against cap + burst;
      every (message, recipient) delivered exactly once, the books counting each message once.
  relay killed: mail routed to a primary relay with a fallback; the primary is stopped mid-run
      (its port refuses from then on); when the mail moved, and lost / doubled deliveries.

    scripts/bench-routes                       # the scale stated in benchmarks/routes-*.md
    .venv/bin/python scripts/bench_routes.py --messages 3000 --out benchmarks/routes.json
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from drain.demo.seeding import DOMAINS, synthetic, with_message_id
from drain.demo.sink import Received, Sink
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.message import Envelope
from drain.settings import Settings
from drain.store import keys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import redis_server, wait_done

CAPPED = ("capped-a.example.org", "capped-b.example.org", "capped-c.example.org")


def workers(url: str, relay: str, processes: int, **env: str) -> subprocess.Popen[bytes]:
    full = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=relay, **env)
    return subprocess.Popen([sys.executable, "-m", "drain", "worker", "--processes", str(processes),
                             "--log-level", "ERROR"], env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)


def drain_cmd(url: str, *args: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-m", "drain", *args], env=dict(os.environ, DRAIN_REDIS_URL=url, **env),
                          capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


def most_in_a_second(times: list[float]) -> int:
    """The most sends in any window of one second (each window starting at a send)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def recipients(i: int, share: float) -> tuple[str, ...]:
    """Message i's recipients: one in an uncapped domain; for `share` of the messages (spread
    evenly) one or two more in the capped domains. Each local part ends with i."""
    rcpts = [f"user{i}@{DOMAINS[i % len(DOMAINS)]}"]
    if (i * 7919) % 100 < share * 100:
        rcpts += [f"user{i}@{CAPPED[i % 3]}", f"other{i}@{CAPPED[(i + 1) % 3]}"][: 1 + i % 2]
    return tuple(rcpts)


def multi_domain(client: redis.Redis, url: str, messages: int, share: float, cap: float, processes: int,
                 timeout_s: float) -> dict[str, Any]:
    client.flushdb()
    lock = threading.Lock()
    sends: dict[str, list[float]] = {}
    taken: Counter[tuple[str, str]] = Counter()

    def record(_index: int, msg: Received) -> None:
        with lock:
            for rcpt in msg.recipients:
                sends.setdefault(rcpt.rpartition("@")[2], []).append(msg.at)
                taken[msg.message_id, rcpt] += 1

    with Sink(keep=False, data_policy=record) as sink:
        settings = Settings(redis_url=url, relay=sink.url)
        api = Client(client, settings)
        items = []
        several = 0
        for i in range(messages):
            rcpts = recipients(i, share)
            several += len(rcpts) > 1
            raw = with_message_id(synthetic(i), f"<route-{i}@bench.example>")
            items.append((raw, Envelope("billing@sender.example.com", rcpts), None))
        ratelimit.pause(client)
        api.store.enqueue_many(items, lane="backlog")
        for domain in CAPPED:
            ratelimit.set_domain(client, domain, cap)
        ratelimit.resume(client)
        proc = workers(url, sink.url, processes)
        try:
            seconds = wait_done(client, messages, timeout_s)
        finally:
            stop(proc)
        books = api.store.books()
    burst = max(1, int(cap * settings.burst_s))
    per_domain = {d: {"sends": len(sends.get(d, [])), "most_in_any_second": most_in_a_second(sends.get(d, []))}
                  for d in CAPPED}
    wanted = {(f"<route-{i}@bench.example>", r) for i, (_raw, env, _w) in enumerate(items) for r in env.recipients}
    return {"name": "multi-domain caps", "messages": messages, "several_domains": several,
            "cap_per_s": cap, "cap_plus_burst": cap + burst, "processes": processes, "seconds": round(seconds, 1),
            "per_capped_domain": per_domain,
            "violations": sum(1 for d in per_domain.values() if d["most_in_any_second"] > cap + burst),
            "recipients_wanted": len(wanted), "recipients_lost": len(wanted - set(taken)),
            "recipients_doubled": sum(n - 1 for n in taken.values()),
            "books": {"accepted": books.accepted, "delivered": books.delivered, "bounced": books.bounced,
                      "queued": books.queued, "balanced": books.balanced}}


def relay_killed(client: redis.Redis, url: str, messages: int, rate: float, processes: int,
                 timeout_s: float) -> dict[str, Any]:
    client.flushdb()
    lock = threading.Lock()
    got: dict[str, list[tuple[str, float]]] = {"primary": [], "fallback": []}

    def recorder(name: str) -> Any:
        def record(_index: int, msg: Received) -> None:
            with lock:
                got[name].append((msg.message_id, msg.at))
        return record

    primary = Sink(keep=False, data_policy=recorder("primary")).start()
    with Sink(keep=False, data_policy=recorder("fallback")) as fallback:
        settings = Settings(redis_url=url, relay=primary.url)
        api = Client(client, settings)
        ratelimit.pause(client)
        api.store.enqueue_many(
            [(with_message_id(synthetic(i), f"<kill-{i}@bench.example>"),
              Envelope("billing@sender.example.com", (f"user{i}@{DOMAINS[i % len(DOMAINS)]}",)), None)
             for i in range(messages)], lane="backlog")
        ratelimit.set_global(client, rate)
        ratelimit.resume(client)
        started = time.monotonic()
        proc = workers(url, primary.url, processes, DRAIN_RELAY_FALLBACK=fallback.url)
        status_text = ""
        try:
            while sum(int(v or 0) for v in client.hmget(keys.BOOKS, ["delivered"])) < messages // 3:
                time.sleep(0.05)
            killed_at = time.time()
            primary.stop()
            time.sleep(3.0)
            relays = {"DRAIN_RELAY": primary.url, "DRAIN_RELAY_FALLBACK": fallback.url}
            status_text = drain_cmd(url, "status", **relays) + drain_cmd(url, "route", "list", **relays)
            wait_done(client, messages, timeout_s)
            seconds = time.monotonic() - started
        finally:
            stop(proc)
        books = api.store.books()
    taken = Counter(m for side in got.values() for m, _t in side)
    after = sorted(t for _m, t in got["fallback"])
    last_primary = max((t for _m, t in got["primary"]), default=killed_at)
    return {"name": "relay killed mid-run", "messages": messages, "global_rate": rate, "processes": processes,
            "seconds": round(seconds, 1), "breaker_cooldown_s": settings.breaker_cooldown_s,
            "relay_breaker_failures": settings.relay_breaker_failures,
            "primary_took": len(got["primary"]), "fallback_took": len(got["fallback"]),
            "first_fallback_after_kill_s": round(after[0] - killed_at, 3) if after else None,
            "last_primary_after_kill_s": round(last_primary - killed_at, 3),
            "lost": messages - len(taken), "duplicates": sum(n - 1 for n in taken.values()),
            "books": {"accepted": books.accepted, "delivered": books.delivered, "deferred": books.deferred,
                      "bounced": books.bounced, "balanced": books.balanced},
            "status_after_kill": status_text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000, help="messages of each run")
    parser.add_argument("--share", type=float, default=0.30, help="share of messages to several domains")
    parser.add_argument("--cap", type=float, default=20.0, help="rate cap of each capped domain (msg/s)")
    parser.add_argument("--rate", type=float, default=100.0, help="global rate of the relay-killed run (msg/s)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--only", choices=("multi", "killed"), default=None, help="run one of the two rows")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
               "load_avg_at_start": os.getloadavg()}
    rows = []
    with redis_server() as client:
        url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
        if args.only in (None, "multi"):
            rows.append(multi_domain(client, url, args.messages, args.share, args.cap, args.processes, args.timeout))
            print(json.dumps(rows[-1]), flush=True)
        if args.only in (None, "killed"):
            rows.append(relay_killed(client, url, args.messages, args.rate, args.processes, args.timeout))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "status_after_kill"}), flush=True)
            print(rows[-1]["status_after_kill"])
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
