"""Enqueue speed in scripts/bench (`--only enqueue`): `Client.enqueue_many` at each size of
the size series, and what a message costs on the way.

Per size and round, on the bench's redis-server (flushed, paused): the producer API with raw
bytes (`Client.enqueue_many`: envelope from the headers, rules, the store) and the store alone
with envelopes given (`Store.enqueue_many`). Reported: msg/s (wall), the producer's CPU per
message and redis-server's (INFO cpu), medians over the rounds; then the steps on one core
(best of 5 loops: the header scan for the envelope, the stored body form, the envelope JSON,
the received event's data and lookup records)
and, with --cprofile N, cProfile's top N functions of one API run.

With --producers (default 1,2), the API path runs again with N producer processes at once,
each a Client of its own enqueueing its share of the messages: how fast a batch producer
that splits its load goes on this machine. The one-producer row stays beside it; the
producer CPU of those rows adds up the processes. The main-thread CPU per message of the
one-producer row bounds one process's rate (its helper threads compress and send beside it).
"""

from __future__ import annotations

import cProfile
import io
import multiprocessing
import pstats
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

import redis
from bench_sizes import label, message

from drain.api import Client
from drain.flow import ratelimit
from drain.message import envelope_from_headers
from drain.settings import Settings
from drain.store import body, events, keys


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _timed(client: redis.Redis, action: Callable[[], object], count: int) -> dict[str, float]:
    client.flushdb()
    ratelimit.pause(client)
    redis0, cpu0, wall0 = _redis_cpu(client), time.process_time(), time.perf_counter()
    main0 = time.thread_time()
    action()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"msg_per_s": count / wall, "client_cpu_us": cpu / count * 1e6,
            "main_thread_cpu_us": (time.thread_time() - main0) / count * 1e6,
            "redis_cpu_us": (_redis_cpu(client) - redis0) / count * 1e6}


def _producer(url: str, raws: list[bytes], start: Any, done: Any) -> None:
    """One of several producer processes: a Client of its own, its share once all are ready."""
    api = Client(redis.Redis.from_url(url), Settings(redis_url=url))
    api.redis.ping()
    start.wait()
    cpu0 = time.process_time()
    accepted = api.enqueue_many(raws)
    done.put((time.process_time() - cpu0, len(accepted.ids)))


def _timed_producers(client: redis.Redis, url: str, raws: list[bytes], producers: int) -> dict[str, float]:
    """`producers` processes (forked: the messages are shared, not copied) enqueue a share of
    `raws` each, started together; msg/s from the start until the last one is done."""
    client.flushdb()
    ratelimit.pause(client)
    context = multiprocessing.get_context("fork")
    start, done = context.Barrier(producers + 1), context.Queue()
    procs = [context.Process(target=_producer, args=(url, raws[k::producers], start, done))
             for k in range(producers)]
    for proc in procs:
        proc.start()
    start.wait()
    redis0, wall0 = _redis_cpu(client), time.perf_counter()
    results = [done.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - wall0
    for proc in procs:
        proc.join()
    count = sum(n for _cpu, n in results)
    if count != len(raws) or int(client.hget(keys.BOOKS, "accepted") or 0) != len(raws):
        raise RuntimeError(f"{producers} producers queued {count} of {len(raws)} messages")
    return {"msg_per_s": count / wall, "client_cpu_us": sum(cpu for cpu, _n in results) / count * 1e6,
            "redis_cpu_us": (_redis_cpu(client) - redis0) / count * 1e6}


def _step_us(action: Callable[[], object], number: int = 300) -> float:
    return round(min(timeit.repeat(action, number=number, repeat=5)) / number * 1e6, 2)


def bench_enqueue(client: redis.Redis, sizes: list[int], count: int, rounds: int,
                  cprofile: int = 0, producers: tuple[int, ...] = (1,)) -> list[dict[str, Any]]:
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    api = Client(client, Settings(redis_url=url))
    rows: list[dict[str, Any]] = []
    several = [n for n in producers if n > 1]
    for size in sizes:
        raws = [message(i, size) for i in range(count)]
        items = [(raw, envelope_from_headers(raw), None) for raw in raws]
        runs: dict[str, list[dict[str, float]]] = {"Client.enqueue_many(raw bytes)": [],
                                                   "Store.enqueue_many(envelopes given)": []}
        runs.update({_several(n): [] for n in several})
        for _ in range(rounds):
            runs["Client.enqueue_many(raw bytes)"].append(_timed(client, partial(api.enqueue_many, raws), count))
            runs["Store.enqueue_many(envelopes given)"].append(
                _timed(client, partial(api.store.enqueue_many, items), count))
            for n in several:
                runs[_several(n)].append(_timed_producers(client, url, raws, n))
        sample = raws[len(raws) // 2]
        envelope = items[len(raws) // 2][1]
        steps = {"envelope from headers": _step_us(partial(envelope_from_headers, sample)),
                 "stored body form (body.fields)": _step_us(partial(body.fields, sample)),
                 "envelope JSON": _step_us(envelope.to_json),
                 "received event parts": _step_us(partial(events.received_parts, sample, envelope.sender,
                                                          envelope.recipients, "api", ""))}
        for name, results in runs.items():
            row = {"part": "enqueue", "name": name, "size": size, "label": label(size), "messages": count,
                   "rounds": rounds, "avg_message_bytes": round(sum(map(len, raws)) / count)}
            row["producers"] = next((n for n in several if name == _several(n)), 1)
            for figure in ("msg_per_s", "client_cpu_us", "main_thread_cpu_us", "redis_cpu_us"):
                if figure in results[0]:
                    row[figure] = round(statistics.median(r[figure] for r in results), 1)
            row["msg_per_s_each"] = [round(r["msg_per_s"]) for r in results]
            if name == "Client.enqueue_many(raw bytes)":
                row["steps_us"] = steps
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
        if cprofile:
            profile = cProfile.Profile()
            client.flushdb()
            profile.runcall(api.enqueue_many, raws)
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(cprofile)
            rows[-len(runs)]["cprofile_top"] = out.getvalue()  # this size's first row: the API's
    return rows


def _several(producers: int) -> str:
    return f"Client.enqueue_many(raw bytes), {producers} producer processes at once"


def enqueue_markdown(rows: list[dict[str, Any]]) -> str:
    rows = [r for r in rows if r.get("part") == "enqueue"]
    lines = [f"Enqueue on this machine's redis-server, {rows[0]['rounds'] if rows else 0} rounds, medians "
             "(producer CPU = the producer processes', helper threads included; main thread = the "
             "producer's own thread, which bounds one process's rate; Redis CPU = redis-server's own, "
             "from INFO cpu). The rows of several producer processes split the same messages between "
             "them; the one-producer rows are a single process:", "",
             "| size | path | producers | messages | msg/s [each round] | wall µs/msg | producer CPU µs/msg "
             "| main thread µs/msg | main thread idle µs/msg | Redis CPU µs/msg | Redis idle µs/msg |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        # Idle: the wall time of a message that the main thread (or redis-server) did not run,
        # waiting on the other side, on its helper threads, or for a core of the shared machine.
        wall = 1e6 / r["msg_per_s"]
        main = r.get("main_thread_cpu_us")
        lines.append(f"| {r['label']} | {r['name']} | {r.get('producers', 1)} | {r['messages']:,} | "
                     f"{r['msg_per_s']:,.0f} [{', '.join(f'{x:,}' for x in r['msg_per_s_each'])}] | {wall:.1f} | "
                     f"{r['client_cpu_us']} | {main if main is not None else ''} | "
                     f"{f'{wall - main:.1f}' if main is not None else ''} | {r['redis_cpu_us']} | "
                     f"{wall - r['redis_cpu_us']:.1f} |")
    steps = [r for r in rows if "steps_us" in r]
    if steps:
        lines += ["", "Steps, µs per message on one core (best of 5 loops):", "",
                  "| size | " + " | ".join(steps[0]["steps_us"]) + " |", "|---|" + "---|" * len(steps[0]["steps_us"])]
        lines += [f"| {r['label']} | " + " | ".join(str(v) for v in r["steps_us"].values()) + " |" for r in steps]
    for r in rows:
        if "cprofile_top" in r:
            lines += ["", f"cProfile, {r['label']}, {r['name']}:", "", "```", r["cprofile_top"].strip(), "```"]
    return "\n".join(lines)
