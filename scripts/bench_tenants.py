"""Tenant fairness benchmark (issue 15, item 5's tenant rows), against its own redis-server,
drain worker processes and an in-process aiosmtpd sink:

1. fairness: a backlog where one tenant owns 90 % of the mail (bulk-loaded before the run)
   and 50 small tenants share the other 10 % (arriving at a steady pace while the big
   backlog drains, also in the backlog lane), drained at a set global rate. Reports each
   small tenant's p99 from enqueue to delivery, and the total throughput; then the same run
   with every message in one tenant ("without tenants": one FIFO list, as before tenants).
2. claims/s: Store.claim of a batch in a loop with 10 and with 10,000 tenants that have
   ready mail (claim cost is O(batch), not O(active tenants)).

    scripts/bench_tenants.py --messages 40000 --rate 800 --out benchmarks/tenants-DATE.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis

from drain.demo.seeding import DOMAINS, synthetic
from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.message import Envelope
from drain.settings import Settings
from drain.store import keys
from drain.store.store import Store
from drain.worker.dispatch import ensure_tokens

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import redis_server, start_workers

BODY = synthetic(0)
# The claims run stores many messages: small ones.
TINY = b"From: bench@x.example\nTo: u@dest.example.net\nSubject: claims\n\nx\n"
SMALL_TENANTS = 50


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


def small_of(seq: int) -> str:
    return f"t{seq % SMALL_TENANTS}.example.com"


def feed_small(store: Store, big: int, total: int, rate: float, items: Callable[[int, int], Iterable[Any]],
               tenant_of: Callable[[int], str], sent: dict[int, float], lock: threading.Lock) -> None:
    """The small tenants' mail (sequence numbers big..total) arrives into the backlog lane in
    chunks over the first 70 % of the big tenant's drain at `rate`; `sent` gets each one's time."""
    started = time.time()
    pace_s = 0.7 * big / rate
    chunk = 50
    for n, first in enumerate(range(big, total, chunk)):
        due = started + pace_s * (first - big) / max(1, total - big)
        time.sleep(max(0.0, due - time.time()))
        count = min(chunk, total - first)
        now = time.time()
        with lock:
            for seq in range(first, first + count):
                sent[seq] = now
        store.enqueue_many(items(first, count), lane="backlog",
                           tenants=(tenant_of(s) for s in range(first, first + count)))
        if n % 20 == 0:
            ensure_tokens(store.client, store.settings)


def small_latency(sent: dict[int, float], delivered_at: dict[int, float]) -> dict[str, Any]:
    """Each small tenant's p99 from enqueue to delivery: the median and the worst over tenants, and the p50."""
    by_tenant: dict[str, list[float]] = {}
    for seq, at_sent in sent.items():
        if seq in delivered_at:
            by_tenant.setdefault(f"t{seq % SMALL_TENANTS}", []).append(delivered_at[seq] - at_sent)
    p99s = sorted(_p99(v) for v in by_tenant.values())
    every = [x for v in by_tenant.values() for x in v]
    return {"small_p99_s_median": round(statistics.median(p99s), 3) if p99s else None,
            "small_p99_s_worst": round(p99s[-1], 3) if p99s else None,
            "small_p50_s": round(statistics.median(every), 3) if every else None}


def fairness(client: redis.Redis, total: int, rate: float, processes: int, tenants_on: bool) -> dict[str, Any]:
    client.flushdb()
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    big = int(total * 0.9)
    small = total - big
    sent: dict[int, float] = {}
    seen: dict[int, tuple[str, float]] = {}
    lock = threading.Lock()

    def record(_index: int, msg: Any) -> None:
        seq = int(msg.recipients[0].partition("@")[0][1:])
        with lock:
            seen[seq] = (msg.sender.rpartition("@")[2], msg.at)

    def items(first: int, count: int, tenant_of: Any) -> Any:
        for seq in range(first, first + count):
            yield BODY, Envelope(f"bench@{tenant_of(seq)}", (f"u{seq}@{DOMAINS[seq % len(DOMAINS)]}",)), None

    with Sink(keep=False, data_policy=record) as sink:
        store = Store(client, Settings(redis_url=url, relay=sink.url))
        ratelimit.pause(client)
        owner = (lambda _s: "big.example.com") if tenants_on else (lambda _s: "all")
        store.enqueue_many(items(0, big, lambda _s: "big.example.com"), lane="backlog",
                           tenants=(owner(s) for s in range(big)))
        ratelimit.set_global(client, rate)
        ratelimit.resume(client)
        proc = start_workers(url, sink.url, processes)
        feed_small(store, big, total, rate, lambda first, count: items(first, count, small_of),
                   small_of if tenants_on else (lambda _s: "all"), sent, lock)
        deadline = time.time() + 10 * total / rate + 60
        while len(seen) < total and time.time() < deadline:
            time.sleep(0.05)
        finished = time.time()
        proc.terminate()
        proc.wait(timeout=60)
    big_done = max((at for tenant, at in seen.values() if tenant == "big.example.com"), default=finished)
    first_at = min(at for _t, at in seen.values())
    last_at = max(at for _t, at in seen.values())
    return {
        "tenants": tenants_on, "messages": total, "big": big, "small": small, "small_tenants": SMALL_TENANTS,
        "rate_set_per_s": rate, "processes": processes, "delivered": len(seen), "lost": total - len(seen),
        "seconds": round(last_at - first_at, 2), "throughput_per_s": round(len(seen) / (last_at - first_at), 1),
        **small_latency(sent, {seq: at for seq, (_t, at) in seen.items()}),
        "small_last_before_big_done": max(seen[s][1] for s in sent if s in seen) <= big_done,
    }


def claims_per_s(client: redis.Redis, tenants: int, per_tenant: int, batch: int, claims: int) -> dict[str, Any]:
    client.flushdb()
    store = Store(client, Settings())
    total = tenants * per_tenant
    store.enqueue_many(((TINY, Envelope("bench@x.example", ("u@dest.example.net",)), None) for _ in range(total)),
                       lane="backlog", tenants=(f"t{i % tenants}" for i in range(total)))
    warm = 0
    while client.scard(keys.ring("backlog") + ":join") > 0:  # every tenant in the ring first
        store.claim("warm", batch)
        warm += 1
    ring = int(client.llen(keys.ring("backlog")))
    timings = []
    client.config_resetstat()
    for _ in range(5):
        started = time.perf_counter()
        got = 0
        for _ in range(claims // 5):
            got += len(store.claim("bench", batch).ids)
        timings.append((claims // 5) / (time.perf_counter() - started))
        assert got == (claims // 5) * batch, got
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return {"active_tenants": tenants, "ring_at_start": ring, "batch": batch, "claims": claims,
            # Redis's own CPU time per claim script call: less shaken by a busy machine.
            "redis_usec_per_claim": stats.get("usec_per_call"),
            "claims_per_s_median": round(statistics.median(timings), 1),
            "claims_per_s_runs": [round(t, 1) for t in timings], "warmup_claims": warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--rate", type=float, default=800.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--claims", type=int, default=1000)
    parser.add_argument("--only", choices=["fairness", "claims"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with redis_server() as client:
        if args.only in (None, "claims"):
            for tenants in (10, 10_000):
                per = (args.claims + 60) * args.batch // tenants + 2
                rows.append({"name": "claims", **claims_per_s(client, tenants, per, args.batch, args.claims)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if args.only in (None, "fairness"):
            for on in (True, False):
                rows.append({"name": "fairness", **fairness(client, args.messages, args.rate, args.processes, on)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "args": vars(args) | {"out": str(args.out)},
              "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
