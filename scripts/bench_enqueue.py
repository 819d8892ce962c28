"""Enqueue speed in scripts/bench (`--only enqueue`): `Client.enqueue_many` at each size of
the size series, and what a message costs on the way.

Per size and round, on the bench's redis-server (flushed, paused): the producer API with raw
bytes (`Client.enqueue_many`: envelope from the headers, rules, the store) and the store alone
with envelopes given (`Store.enqueue_many`). Reported: msg/s (wall), the producer's CPU per
message and redis-server's (INFO cpu), medians over the rounds; then the steps on one core
(best of 5 loops: the header scan for the envelope, the stored body form, the envelope JSON,
the received event's data and lookup records)
and, with --cprofile N, cProfile's top N functions of one API run.
"""

from __future__ import annotations

import cProfile
import io
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
from drain.store import body, events


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _timed(client: redis.Redis, action: Callable[[], object], count: int) -> dict[str, float]:
    client.flushdb()
    ratelimit.pause(client)
    redis0, cpu0, wall0 = _redis_cpu(client), time.process_time(), time.perf_counter()
    action()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"msg_per_s": count / wall, "client_cpu_us": cpu / count * 1e6,
            "redis_cpu_us": (_redis_cpu(client) - redis0) / count * 1e6}


def _step_us(action: Callable[[], object], number: int = 300) -> float:
    return round(min(timeit.repeat(action, number=number, repeat=5)) / number * 1e6, 2)


def bench_enqueue(client: redis.Redis, sizes: list[int], count: int, rounds: int,
                  cprofile: int = 0) -> list[dict[str, Any]]:
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    api = Client(client, Settings(redis_url=url))
    rows: list[dict[str, Any]] = []
    for size in sizes:
        raws = [message(i, size) for i in range(count)]
        items = [(raw, envelope_from_headers(raw), None) for raw in raws]
        runs: dict[str, list[dict[str, float]]] = {"Client.enqueue_many(raw bytes)": [],
                                                   "Store.enqueue_many(envelopes given)": []}
        for _ in range(rounds):
            runs["Client.enqueue_many(raw bytes)"].append(_timed(client, partial(api.enqueue_many, raws), count))
            runs["Store.enqueue_many(envelopes given)"].append(
                _timed(client, partial(api.store.enqueue_many, items), count))
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
            for figure in ("msg_per_s", "client_cpu_us", "redis_cpu_us"):
                row[figure] = round(statistics.median(r[figure] for r in results), 1)
            row["msg_per_s_each"] = [round(r["msg_per_s"]) for r in results]
            if name.startswith("Client"):
                row["steps_us"] = steps
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
        if cprofile:
            profile = cProfile.Profile()
            client.flushdb()
            profile.runcall(api.enqueue_many, raws)
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(cprofile)
            rows[-2]["cprofile_top"] = out.getvalue()
    return rows


def enqueue_markdown(rows: list[dict[str, Any]]) -> str:
    rows = [r for r in rows if r.get("part") == "enqueue"]
    lines = [f"Enqueue on this machine's redis-server, {rows[0]['rounds'] if rows else 0} rounds, medians "
             "(producer CPU = this process; Redis CPU = redis-server's own, from INFO cpu):", "",
             "| size | path | messages | msg/s [each round] | producer CPU µs/msg | Redis CPU µs/msg |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['name']} | {r['messages']:,} | {r['msg_per_s']:,.0f} "
                     f"[{', '.join(f'{x:,}' for x in r['msg_per_s_each'])}] | {r['client_cpu_us']} | "
                     f"{r['redis_cpu_us']} |")
    steps = [r for r in rows if "steps_us" in r]
    if steps:
        lines += ["", "Steps, µs per message on one core (best of 5 loops):", "",
                  "| size | " + " | ".join(steps[0]["steps_us"]) + " |", "|---|" + "---|" * len(steps[0]["steps_us"])]
        lines += [f"| {r['label']} | " + " | ".join(str(v) for v in r["steps_us"].values()) + " |" for r in steps]
    for r in rows:
        if "cprofile_top" in r:
            lines += ["", f"cProfile, {r['label']}, {r['name']}:", "", "```", r["cprofile_top"].strip(), "```"]
    return "\n".join(lines)
