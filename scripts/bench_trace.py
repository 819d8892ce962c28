"""The cost of events (issue 14), for scripts/bench --only trace:

- memory: Redis bytes of all the events of a message delivered the first time (received +
  delivered, with their index records), from INFO used_memory before and after deleting
  the events keys once a real drain is done; and the same per message of a synthetic load;
- lookup: `drain trace --recipient` among 1,000,000 delivered messages' events, loaded by a
  pipelined loader that calls the same recording code (event.lua, lib.event) as enqueue;
- throughput: drain with events on and off, alternating, in one run (same backlog each time).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import redis

from drain.demo.seeding import synthetic
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import events, keys
from drain.store.scripts import Scripts
from drain.trace import history

# Events per script call while loading.
LOAD_CHUNK = 2000


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def events_bytes(client: redis.Redis) -> int:
    """Bytes the events keys hold: used_memory before minus after deleting them."""
    before = used_memory(client)
    names = [keys.EVENTS, *client.scan_iter(f"{keys.EVENTS}:ix:*", count=10000)]
    for at in range(0, len(names), 1000):
        client.delete(*names[at:at + 1000])
    return before - used_memory(client)


def recipient(n: int) -> str:
    # About 5 messages per recipient, 2,000 domains: a realistic spread for one customer's trace.
    return f"user{n % 200_000}@d{n % 2000}.example.net"


def load(client: redis.Redis, settings: Settings, count: int, start: int = 1) -> float:
    """Record received + delivered for `count` synthetic messages; returns seconds taken."""
    scripts = Scripts(client)
    began = time.perf_counter()
    batch: list[events.Event] = []
    raw_head = b"From: billing@sender.example.com\r\nMessage-ID: <%d.%d@sender.example.com>\r\n\r\n"
    for n in range(start, start + count):
        msg_id = format(n, "x")
        raw = raw_head % (n, n)
        batch.append(events.received(msg_id, raw, "billing@sender.example.com", [recipient(n)], "api"))
        batch.append(events.Event("d", msg_id, [f"250 2.0.0 Ok: queued as 4XyZ{n % 10**6:06d}", 1, 0.412]))
        if len(batch) >= LOAD_CHUNK:
            events.record(client, scripts, settings, batch)
            batch = []
    if batch:
        events.record(client, scripts, settings, batch)
    return time.perf_counter() - began


def bench_lookup(report: Any, client: redis.Redis, count: int, url: str) -> None:
    client.flushdb()
    settings = Settings(redis_url=url, trace_max_events=3 * count)
    before = used_memory(client)
    seconds = load(client, settings, count)
    per_message = (used_memory(client) - before) / count
    target = recipient(count // 2)
    timings = []
    for _ in range(5):
        began = time.perf_counter()
        docs = history.trace(client, history.Query(recipient=target), time.time(), settings.trace_retention_s)
        timings.append(time.perf_counter() - began)
    env = dict(os.environ, DRAIN_REDIS_URL=url)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "drain", "--version"], env=env, capture_output=True, check=False)
    start_s = time.perf_counter() - began  # the process alone: Python and drain's imports
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "drain", "trace", "--recipient", target, "--json"],
                          env=env, capture_output=True, check=False)
    cli_s = time.perf_counter() - began
    report.add(name="trace lookup", messages=count, events=client.xlen(keys.EVENTS), load_s=round(seconds, 1),
               synthetic_bytes_per_message=round(per_message), recipient=target, found=len(docs),
               lookup_s_median=round(statistics.median(timings), 4), lookup_s_max=round(max(timings), 4),
               cli_trace_s=round(cli_s, 3), cli_version_s=round(start_s, 3),
               cli_lines=len(proc.stdout.splitlines()), cli_exit=proc.returncode)


def drain_once(client: redis.Redis, url: str, relay: str, count: int, processes: int, trace: bool,
               wait_done: Callable[[redis.Redis, int, float], float]) -> dict[str, Any]:
    """Enqueue count messages (paused), drain them with --burst workers; msg/s and event bytes."""
    from drain.flow import ratelimit

    client.flushdb()
    settings = Settings(redis_url=url, relay=relay, trace=trace)
    ratelimit.pause(client)
    raws = [synthetic(i, size=2048) for i in range(count)]
    began = time.perf_counter()
    Client(client, settings).enqueue_many(raws)
    enqueue_s = time.perf_counter() - began
    ratelimit.resume(client)
    env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=relay, DRAIN_TRACE="on" if trace else "off")
    proc = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--burst", "--processes", str(processes),
                             "--log-level", "WARNING"], env=env, stdout=subprocess.DEVNULL)
    try:
        seconds = wait_done(client, count, 3600)
    finally:
        proc.wait(timeout=120)
    delivered = int(client.hget(keys.BOOKS, "delivered") or 0)
    kinds = client.xlen(keys.EVENTS)
    return {"msg_per_s": count / seconds, "enqueue_per_s": count / enqueue_s, "delivered": delivered, "events": kinds,
            "event_bytes_per_delivered": events_bytes(client) / max(1, delivered)}


def bench_cost(report: Any, client: redis.Redis, url: str, relay: str, count: int, processes: int, rounds: int,
               wait_done: Callable[[redis.Redis, int, float], float]) -> None:
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for _ in range(rounds):
        for trace in (False, True):
            runs[trace].append(drain_once(client, url, relay, count, processes, trace, wait_done))
    off = statistics.median(r["msg_per_s"] for r in runs[False])
    on = statistics.median(r["msg_per_s"] for r in runs[True])
    report.add(name="events cost", messages=count, processes=processes, rounds=rounds,
               msg_per_s_events_off=[round(r["msg_per_s"]) for r in runs[False]],
               msg_per_s_events_on=[round(r["msg_per_s"]) for r in runs[True]],
               median_off=round(off), median_on=round(on), on_vs_off=round(on / off, 3),
               enqueue_per_s_off=round(statistics.median(r["enqueue_per_s"] for r in runs[False])),
               enqueue_per_s_on=round(statistics.median(r["enqueue_per_s"] for r in runs[True])),
               events_per_message=round(statistics.median(r["events"] / count for r in runs[True]), 2),
               event_bytes_per_delivered_msg=round(statistics.median(r["event_bytes_per_delivered"]
                                                                     for r in runs[True])),
               event_bytes_events_off=round(statistics.median(r["event_bytes_per_delivered"] for r in runs[False])))
