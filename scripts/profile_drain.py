"""Where a message's time goes in a drain worker: one RQ worker (drain's DrainWorker, burst
mode) run in this process on a queue of 2 KB, 20 KB and 100 KB messages (the bench's size
series), with timers around each step, against its own redis-server and Postfix's smtp-sink
(an aiosmtpd sink in its own process when Postfix is not installed).

Steps (exclusive times: a step's figure leaves out the steps inside it):
- parse+validate: operator rules and drain.validate.check;
- SMTP: Relay.send (smtplib, the socket, the relay's answers), without the two below;
- line endings: drain.worker.delivery.wire_form (LF to CRLF);
- dot-stuffing: smtplib's _quote_periods, or drain.worker.delivery.data_block (data_pieces
  where the block goes out in pieces) where drain prepares the DATA bytes itself;
- Redis (drain): commands and pipelines issued inside a batch job, by the Store step around
  them (claim, load, settle, other: gate, breakers, rules version, token top-up...);
- drain glue: the rest of the batch job in Python (claim bookkeeping, message objects,
  outcomes);
- RQ: the worker loop outside the job (dequeue, job bookkeeping, heartbeats) and its Redis.

Wall time is what the worker waited for (Redis and the sink run on the same cores); CPU is
the worker's own thread. Housekeeping is off (one worker, nothing to reap).

    scripts/profile-drain                          # 5,000 messages per size
    scripts/profile-drain --messages 2000 --sizes 2048 --cprofile 25
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import platform
import pstats
import smtplib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_postfix
import bench_sizes
from bench import redis_server, smtp_sink

from drain import validate
from drain.api import Client
from drain.flow import ratelimit
from drain.intake import rules
from drain.settings import Settings
from drain.store import keys, store
from drain.worker import delivery
from drain.worker.rqworker import DrainWorker
from workers import jobs

STEPS = ("parse+validate", "SMTP", "line endings", "dot-stuffing", "Redis: claim", "Redis: load", "Redis: settle",
         "Redis: other", "drain glue", "RQ (Python)", "RQ (Redis)")


class Timers:
    """Exclusive wall and CPU time per step, on the main thread only."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = dict.fromkeys(STEPS, 0.0)
        self.cpu: dict[str, float] = dict.fromkeys(STEPS, 0.0)
        self.calls: dict[str, int] = dict.fromkeys(STEPS, 0)
        self.stack: list[list[Any]] = []  # [step, wall start, cpu start, wall of children, cpu of children]
        self.store_op: str | None = None
        self.in_job = False
        self.main = threading.get_ident()
        # Snapshots at the first job's start and the last job's end: the figures per message
        # leave out the worker's start and stop (paid once per process).
        self.first: tuple[float, dict[str, float], dict[str, float]] | None = None
        self.last: tuple[float, dict[str, float], dict[str, float]] | None = None

    def snapshot(self) -> tuple[float, dict[str, float], dict[str, float]]:
        """Now, and the exclusive times so far, open steps included up to now."""
        now_wall, now_cpu = time.perf_counter(), time.thread_time()
        wall, cpu = dict(self.wall), dict(self.cpu)
        inner_wall = inner_cpu = 0.0
        for frame in reversed(self.stack):
            name, start_wall, start_cpu, child_wall, child_cpu = frame
            open_wall, open_cpu = now_wall - start_wall, now_cpu - start_cpu
            wall[name] += open_wall - child_wall - inner_wall
            cpu[name] += open_cpu - child_cpu - inner_cpu
            inner_wall, inner_cpu = open_wall, open_cpu
        return now_wall, wall, cpu

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        if threading.get_ident() != self.main:
            yield
            return
        frame = [name, time.perf_counter(), time.thread_time(), 0.0, 0.0]
        self.stack.append(frame)
        try:
            yield
        finally:
            wall = time.perf_counter() - frame[1]
            cpu = time.thread_time() - frame[2]
            self.stack.pop()
            self.wall[name] += wall - frame[3]
            self.cpu[name] += cpu - frame[4]
            self.calls[name] += 1
            if self.stack:
                self.stack[-1][3] += wall
                self.stack[-1][4] += cpu

    def redis_step(self) -> str:
        if not self.in_job:
            return "RQ (Redis)"
        return f"Redis: {self.store_op or 'other'}"


def instrument(t: Timers) -> Callable[[], None]:
    """Wrap the worker's steps; returns a function that puts everything back."""
    undo: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, attr: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, attr)
        undo.append((owner, attr, original))
        setattr(owner, attr, make(original))

    def timed(name: str) -> Callable[[Any], Any]:
        def make(fn: Any) -> Any:
            def inner(*a: Any, **k: Any) -> Any:
                with t.step(name):
                    return fn(*a, **k)
            return inner
        return make

    def redis_call(fn: Any) -> Any:
        def inner(*a: Any, **k: Any) -> Any:
            with t.step(t.redis_step()):
                return fn(*a, **k)
        return inner

    def store_op(name: str) -> Callable[[Any], Any]:
        def make(fn: Any) -> Any:
            def inner(*a: Any, **k: Any) -> Any:
                outer, t.store_op = t.store_op, name
                try:
                    return fn(*a, **k)
                finally:
                    t.store_op = outer
            return inner
        return make

    def job(fn: Any) -> Any:
        def inner(*a: Any, **k: Any) -> Any:
            if t.first is None:
                t.first = t.snapshot()
            t.in_job = True
            try:
                with t.step("drain glue"):
                    return fn(*a, **k)
            finally:
                t.in_job = False
                t.last = t.snapshot()
        return inner

    wrap(validate, "check", timed("parse+validate"))
    wrap(sys.modules["drain.worker.batch"], "first_match", timed("parse+validate"))
    wrap(delivery.Relay, "send", timed("SMTP"))
    wrap(delivery, "wire_form", timed("line endings"))
    wrap(smtplib, "_quote_periods", timed("dot-stuffing"))
    if hasattr(delivery, "data_pieces"):  # the DATA bytes in pieces for one writev
        wrap(delivery, "data_pieces", timed("dot-stuffing"))
    elif hasattr(delivery, "data_block"):  # drain prepares the DATA bytes itself (dot-stuffing, terminator)
        wrap(delivery, "data_block", timed("dot-stuffing"))
    wrap(redis.Redis, "execute_command", redis_call)
    wrap(redis.client.Pipeline, "execute", redis_call)
    for op in ("claim", "load", "settle"):
        wrap(store.Store, op, store_op(op))
    wrap(jobs, "deliver_batch", job)

    def restore() -> None:
        for owner, attr, original in reversed(undo):
            setattr(owner, attr, original)
    return restore


def run_worker(client: redis.Redis, settings: Settings) -> None:
    worker = DrainWorker([keys.RQ_QUEUE], connection=client, drain_settings=settings, housekeeping=False)
    worker.work(burst=True, logging_level="WARNING", with_scheduler=False)


def fill(client: redis.Redis, settings: Settings, raws: list[bytes]) -> None:
    """An empty database holding `raws`, queued while paused (with their batch jobs)."""
    client.flushdb()
    rules.version(client)
    # Every run starts with cold address caches, as mail to new recipients does (the
    # runs of one size share their recipients).
    validate._valid_cached.cache_clear()
    validate._strict_parse_failure.cache_clear()
    ratelimit.pause(client)
    Client(client, settings).enqueue_many(raws)
    ratelimit.resume(client)


def profile_size(client: redis.Redis, relay: str, size: int, count: int, top: int,
                 sessions: int = 1, cpu_profile: bool = False, only_cprofile: bool = False,
                 sort: str = "tottime", dump: Path | None = None) -> dict[str, Any]:
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    settings = Settings(redis_url=url, relay=relay, relay_sessions=sessions)
    # The step timers follow one thread: with lanes only the plain run is made, and its CPU
    # is the whole process's (every lane's thread).
    cpu_clock = time.thread_time if sessions == 1 else time.process_time
    raws = [bench_sizes.message(i, size) for i in range(count)]
    avg = sum(map(len, raws)) / count
    figures: dict[str, Any] = {"size": size, "label": bench_sizes.label(size), "messages": count,
                               "avg_message_bytes": round(avg)}
    modes = ("plain", "timed", "cprofile") if top else ("plain", "timed")
    if top and only_cprofile:
        modes = ("cprofile",)
    for mode in modes if sessions == 1 else ("plain",):
        fill(client, settings, raws)
        t = Timers()
        restore = instrument(t) if mode == "timed" else (lambda: None)
        # On a shared box the wall clock mostly counts waiting (the sink, Redis, other
        # processes): --cprofile-cpu times the worker thread's own CPU instead.
        timer = (time.thread_time,) if cpu_profile else ()
        profiler = cProfile.Profile(*timer) if mode == "cprofile" else None
        started_wall, started_cpu = time.perf_counter(), cpu_clock()
        try:
            if profiler is not None:
                profiler.enable()
            with t.step("RQ (Python)"):
                run_worker(client, settings)
        finally:
            if profiler is not None:
                profiler.disable()
            restore()
        wall, cpu = time.perf_counter() - started_wall, cpu_clock() - started_cpu
        delivered = int(client.hget(keys.BOOKS, "delivered") or 0)
        if delivered != count:
            raise RuntimeError(f"{mode} run delivered {delivered} of {count}")
        figures[f"{mode}_msg_per_s"] = round(count / wall, 1)
        figures[f"{mode}_cpu_us_per_msg"] = round(cpu / count * 1e6, 1)
        if mode == "timed":
            assert t.first is not None and t.last is not None
            kb = avg / 1024
            step_wall = {n: t.last[1][n] - t.first[1][n] for n in STEPS}
            step_cpu = {n: t.last[2][n] - t.first[2][n] for n in STEPS}
            jobs_s = t.last[0] - t.first[0]
            figures["steps"] = {name: {"wall_us_per_msg": round(step_wall[name] / count * 1e6, 1),
                                       "cpu_us_per_msg": round(step_cpu[name] / count * 1e6, 1),
                                       "wall_us_per_kb": round(step_wall[name] / count / kb * 1e6, 2),
                                       "calls": t.calls[name]} for name in STEPS}
            figures["jobs_msg_per_s"] = round(count / jobs_s, 1)
            figures["start_stop_s"] = round(wall - jobs_s, 3)
        if profiler is not None:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(top)
            figures["cprofile_top"] = out.getvalue()
            if dump is not None:
                profiler.dump_stats(dump / f"cprofile-{size}.pstats")
        print(json.dumps({k: v for k, v in figures.items() if k != "cprofile_top"}), file=sys.stderr, flush=True)
    return figures


def markdown(machine: dict[str, Any], results: list[dict[str, Any]]) -> str:
    lines = [f"Machine: {machine['cpus']} CPUs, Python {machine['python']}, Redis {machine['redis']}, "
             f"sink: {machine['sink']}; {machine['date']}", "",
             "One drain worker process (RQ SimpleWorker, in process, burst, housekeeping off). "
             "Exclusive time per step, µs per message (wall / worker CPU) and wall µs per KB:", ""]
    head = "| step | " + " | ".join(f"{r['label']} µs/msg wall / CPU | µs/KB" for r in results) + " |"
    lines += [head, "|---|" + "---|---|" * len(results)]
    for name in STEPS:
        cells = [f"{r['steps'][name]['wall_us_per_msg']:,} / {r['steps'][name]['cpu_us_per_msg']:,} | "
                 f"{r['steps'][name]['wall_us_per_kb']:,}" for r in results]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = [f"{sum(s['wall_us_per_msg'] for s in r['steps'].values()):,.1f} / "
             f"{sum(s['cpu_us_per_msg'] for s in r['steps'].values()):,.1f} | "
             f"{sum(s['wall_us_per_kb'] for s in r['steps'].values()):,.2f}" for r in results]
    lines.append("| **all steps** | " + " | ".join(cells) + " |")
    lines.append("")
    for r in results:
        lines.append(f"- {r['label']} ({r['avg_message_bytes']:,} B, {r['messages']:,} messages): "
                     f"{r['plain_msg_per_s']:,} msg/s uninstrumented ({r['plain_cpu_us_per_msg']:,} µs CPU/msg), "
                     f"{r['timed_msg_per_s']:,} msg/s with the timers, {r['jobs_msg_per_s']:,} msg/s from the "
                     f"first job's start to the last one's end (the worker's start and stop took "
                     f"{r['start_stop_s']} s and are left out of the table)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000, help="messages per size")
    parser.add_argument("--sizes", default="2048,20480,102400", help="comma-separated sizes in bytes")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N",
                        help="also run under cProfile and print its top N functions by own time")
    parser.add_argument("--cprofile-cpu", action="store_true",
                        help="time cProfile by the worker thread's CPU, not the wall clock")
    parser.add_argument("--cprofile-sort", default="tottime", help="pstats sort key (tottime, cumulative, ...)")
    parser.add_argument("--cprofile-dump", type=Path, metavar="DIR",
                        help="also write each size's cProfile stats to DIR/cprofile-SIZE.pstats")
    parser.add_argument("--only-cprofile", action="store_true", help="with --cprofile: skip the timed runs")
    parser.add_argument("--out", type=Path, help="write JSON here (and Markdown beside it)")
    parser.add_argument("--sessions", type=int, default=1,
                        help="DRAIN_RELAY_SESSIONS (lanes); above 1 only the plain run, CPU of every thread")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    counting = bench_postfix.tool("smtp-sink") is not None
    sink_cm: Any = bench_postfix.CountingSink() if counting else smtp_sink(False)
    with redis_server() as client, sink_cm as sink:
        relay, sink_name = (sink.url, "postfix smtp-sink") if counting else sink
        machine = {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                   "platform": platform.platform(), "redis": client.info("server")["redis_version"],
                   "sink": sink_name, "date": time.strftime("%Y-%m-%d %H:%M")}
        results = [profile_size(client, relay, size, args.messages, args.cprofile, args.sessions,
                                args.cprofile_cpu, args.only_cprofile, args.cprofile_sort, args.cprofile_dump)
                   for size in sizes]
    if args.sessions > 1 or args.only_cprofile:
        for r in results:
            print(f"\ncProfile, {r['label']}:\n{r.pop('cprofile_top', '')}")
        print(json.dumps(results, indent=2))
        if args.out:
            figures = {"machine": machine, "sessions": args.sessions, "results": results}
            args.out.write_text(json.dumps(figures, indent=2))
        return
    text = markdown(machine, results)
    print(text)
    for r in results:
        if "cprofile_top" in r:
            print(f"\ncProfile, {r['label']}:\n{r['cprofile_top']}")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
        args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
