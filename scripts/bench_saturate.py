"""Redis CPU per message when one redis-server is busy (`scripts/bench --only cells --saturate`).

`scripts/bench --only cells` measures redis-server CPU per message while two worker processes
drain into an SMTP sink: Redis is then mostly idle, and each round trip pays the wake-up of
an idle event loop. Issue 16's "one Redis core caps drain at N msg/s" is about a busy Redis,
which serves many ready clients per wake. This measures towards that ceiling.

The simulated workers are drain's own worker (`drain worker --burst`: RQ jobs, lanes, the
settle window, the journal pool, claim, load, journal, settle, housekeeping, heartbeats),
with two things swapped out in the worker processes, neither of which talks to Redis: the
SMTP session answers 250 after SEND_MS (a sleep: no socket, no CPU), and validation passes
every message (--lean also skips rules, the route and the gate, which send nothing to Redis
in the default setup). So every Redis command a simulated worker sends is the one the real
worker sends, from the same code, and a change to the worker's round trips or to the Lua
scripts shows up here unchanged. Concurrency is raised by adding worker processes (each
with the default relay sessions, as the real bench runs them) until redis-server uses about
one core, or the machine runs out: each row says what share of a core Redis reached and
what the workers used; on a machine whose workers run out first, the projection (a line
through the runs, Redis µs per message against its wake-ups per message) says what a Redis
that never sleeps would spend.

Each run: a fresh redis-server, the backlog enqueued through the API while delivery is
paused, then the workers; redis-server CPU (INFO cpu), INFO commandstats, its socket reads
and its voluntary context switches (wake-ups) are read when SKIP of the backlog is done and
again at 1 - SKIP, so start-up and the tail are left out. The real bench (SMTP sink, 2
processes) is measured the same way first, and each simulated row's commands per message
are checked against it: within TOLERANCE in total and for every command sent at least MAJOR
times per message.

    scripts/bench --only cells --saturate --messages 30000 --levels 1,2,4,8,12 --out benchmarks/x.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import free_port
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.settings import Settings
from drain.store.embedded import spawn_on_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cells import Meter, done_count

# Share of the backlog left out of the measurement at each end (start-up, the tail).
SKIP = 0.1
# Simulated traffic must match the real one's commands per message within this share.
TOLERANCE = 0.10
# Commands sent at least this often per message are checked one by one.
MAJOR = 0.1
# Where the simulated workers' (never opened) relay points.
NOWHERE = "smtp://127.0.0.1:9"
# The reply the simulated relay gives (as Postfix words it: it ends in the delivered event).
REPLY = "2.0.0 Ok: queued as 4dXq1Y0kZbz3f"
POLL_S = 0.02
# The projection needs runs this far apart in redis-server wake-ups per message.
WAKES_SPREAD = 0.3
# How long the simulated relay takes to answer (see simulated_worker).
SEND_MS = 0.3


def simulated_worker(processes: int, send_s: float, lean: bool = False) -> None:
    """`drain worker --burst` in this process, with the SMTP session and validation swapped
    out (neither sends anything to Redis); the pool's processes are forked, and keep the swap.
    The session answers after `send_s` (sleeping, no CPU): a lane holds its place in the settle
    window while its relay answers, which sets how often the lanes write the journal."""
    from drain import validate
    from drain.store.connection import connect
    from drain.worker import rqworker, runtime
    from drain.worker.delivery import Relay, RelayConfig, Result

    class AcceptingRelay(Relay):
        """A relay session that takes every message at once, without a socket."""

        def send(self, sender: str, recipients: list[str], raw: bytes, smtputf8: bool = False) -> Result:
            if send_s > 0:
                time.sleep(send_s)
            return Result("delivered", 250, REPLY)

        def close(self) -> None:
            return None

    def accepting(settings: Settings, config: RelayConfig) -> Relay:
        return AcceptingRelay(config)

    def passing(*_args: Any, **_kwargs: Any) -> validate.Verdict:
        return validate.Verdict(())

    runtime.relay_for = accepting  # type: ignore[attr-defined]  # (runtime imports it from relays)
    validate.check = passing
    if lean:
        from drain.worker.batch import Batch
        from drain.worker.groups import Groups

        def delivered(self: Batch, msg: Any) -> Any:
            """What decide makes of a message the relay took, without the steps before the
            send (rules, validation, the route, the gate: no Redis in the default setup)."""
            if send_s > 0:
                time.sleep(send_s)
            tally = Groups()
            tally.add(msg.envelope.recipients, Result("delivered", 250, REPLY))
            return self._conclude(msg, tally, self.clock())

        Batch.decide = delivered  # type: ignore[method-assign]
    settings = Settings.from_env()
    rqworker.run(connect(settings, check=False), settings, processes=processes, burst=True,
                 logging_level="ERROR")


def measured_drain(worker: list[str], env: dict[str, str], count: int, size: int,
                   skip: float = SKIP, pin: bool = False) -> dict[str, Any]:
    """A fresh redis-server with `count` messages of `size` bytes queued, drained by the
    worker command; redis-server CPU and commands between `skip` and 1 - `skip` of the backlog.
    pin: redis-server on the last CPU, the workers on the others (it does not wait for them)."""
    cpus = sorted(os.sched_getaffinity(0))
    if pin and len(cpus) < 2:
        raise ValueError("--pin needs at least two CPUs")
    with ExitStack() as stack:
        port = free_port()
        server = spawn_on_port(port, Path(stack.enter_context(tempfile.TemporaryDirectory())))
        if pin:
            os.sched_setaffinity(server.pid, cpus[-1:])
        stack.callback(server.wait)
        stack.callback(server.terminate)
        client = redis.Redis(port=port)
        url = f"redis://127.0.0.1:{port}/0"
        ratelimit.pause(client)
        Client.connect(Settings(redis_url=url, relay=env.get("DRAIN_RELAY", NOWHERE))).enqueue_many(
            [synthetic(i, size=size) for i in range(count)])
        ratelimit.resume(client)
        client.config_resetstat()
        proc = subprocess.Popen(worker, env=dict(env, DRAIN_REDIS_URL=url), stdout=subprocess.DEVNULL,
                                preexec_fn=(lambda: os.sched_setaffinity(0, cpus[:-1])) if pin else None)
        stack.callback(proc.wait, 120)
        first, last = int(count * skip), count - int(count * skip)
        meter: Meter | None = None
        started = began = time.perf_counter()
        done = polls = 0
        while True:
            done = done_count([client])
            polls += 1
            if meter is None and done >= first:
                meter, began, at_first, polls = Meter([client]), time.perf_counter(), done, 0
                workers_cpu = tree_cpu_s(proc.pid)
                wakes, reads = wakes_and_reads(server.pid, client)

            if done >= last:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"workers stopped with {done} of {count} done")
            time.sleep(POLL_S)
        assert meter is not None
        seconds = time.perf_counter() - began
        cpu, stats = meter.delta()
        user, system = (b - a for a, b in zip(workers_cpu, tree_cpu_s(proc.pid), strict=True))
        wakes, reads = (b - a for a, b in zip((wakes, reads), wakes_and_reads(server.pid, client), strict=True))
        measured = done - at_first
        # This process's own reads (the polls above: one HMGET each; the meter's INFO) are not the workers'.
        stats["hmget"] = (stats.get("hmget", (0, 0))[0] - polls, stats.get("hmget", (0, 0))[1])
        stats = {name: v for name, v in stats.items() if name != "info" and v[0] > 0}
        proc.wait(timeout=120)
        total = done_count([client])
        return {
            "messages": count, "size": size, "measured_messages": measured, "measured_s": round(seconds, 3),
            "msg_per_s": round(measured / seconds, 1), "whole_run_s": round(time.perf_counter() - started, 2),
            "redis_cpu_us_per_msg": round(cpu * 1e6 / measured, 2),
            "redis_core_share": round(cpu / seconds, 3),
            # Times redis-server went to sleep waiting for work (and was woken), and its socket
            # reads, per message; this process's polls are in both (a few per second).
            "redis_wakes_per_msg": round(wakes / measured, 3),
            "redis_reads_per_msg": round(reads / measured, 3),
            "worker_cpu_us_per_msg": round((user + system) * 1e6 / measured, 1),
            "worker_sys_us_per_msg": round(system * 1e6 / measured, 1),
            "worker_core_share": round((user + system) / seconds, 3),
            "msg_per_s_per_redis_core": round(measured / cpu) if cpu else None,
            "commands_per_msg": round(sum(c for c, _u in stats.values()) / measured, 3),
            "mix": {name: round(calls / measured, 4) for name, (calls, _u) in
                    sorted(stats.items(), key=lambda kv: -kv[1][0])},
            "done": total,
        }


def wakes_and_reads(pid: int, client: redis.Redis) -> tuple[int, int]:
    """redis-server's voluntary context switches so far (each a sleep in its event loop that
    something woke), and the socket reads it has processed (INFO stats)."""
    switches = psutil.Process(pid).num_ctx_switches().voluntary
    return int(switches), int(client.info("stats")["total_reads_processed"])


def projection(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Redis µs per message against its wake-ups per message, a straight line fitted over the
    runs (least squares): where it meets zero wake-ups is a Redis that never sleeps, busy.
    Only when the runs spread over WAKES_SPREAD wake-ups per message and the line falls."""
    points = [(r["redis_wakes_per_msg"], r["redis_cpu_us_per_msg"]) for r in rows]
    xs = [x for x, _ in points]
    if len(points) < 3 or max(xs) - min(xs) < WAKES_SPREAD:
        return {"none": f"the runs' wake-ups per message spread less than {WAKES_SPREAD}"}
    n = len(points)
    mx, my = sum(xs) / n, sum(y for _, y in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    busy = my - slope * mx
    worst = max(abs(y - (busy + slope * x)) for x, y in points)
    if slope <= 0 or busy <= 0:
        return {"none": f"Redis µs per message did not fall with its wake-ups (slope {slope:.2f} µs per wake-up, "
                        f"worst miss {worst:.1f} µs): the machine's noise is larger than the effect"}
    return {"us_per_wake": round(slope, 2), "busy_us_per_msg": round(busy, 2),
            "busy_msg_per_s_per_core": round(1e6 / busy), "worst_residual_us": round(worst, 2)}


def tree_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user, system) of a process and its children so far."""
    user = system = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                user, system = user + times.user, system + times.system
    return user, system


def mix_check(real: dict[str, float], simulated: dict[str, float], tolerance: float = TOLERANCE,
              major: float = MAJOR) -> tuple[bool, list[str]]:
    """Whether the simulated commands per message match the real ones: the total within
    `tolerance`, and every command sent at least `major` times per message by either."""
    problems: list[str] = []
    real_total, sim_total = sum(real.values()), sum(simulated.values())
    if abs(sim_total - real_total) > tolerance * real_total:
        problems.append(f"total {sim_total:.3f} commands/msg vs real {real_total:.3f}")
    for name in sorted(set(real) | set(simulated)):
        r, s = real.get(name, 0.0), simulated.get(name, 0.0)
        if max(r, s) >= major and abs(s - r) > tolerance * max(r, s):
            problems.append(f"{name} {s:.3f}/msg vs real {r:.3f}")
    return not problems, problems


def simulated_command(processes: int, send_s: float, lean: bool) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--simulated-worker", str(processes),
            "--send-ms", str(send_s * 1000), *(["--lean"] if lean else [])]


def run(levels: Sequence[int], count: int, size: int, real_processes: int, relay: str | None,
        send_s: float = 0.0, lean: bool = False, pin: bool = False, sittings: int = 1) -> dict[str, Any]:
    """Each sitting: the real bench (when a relay is given), then the simulated workers at each
    level, each checked against that sitting's real commands per message."""
    env = dict(os.environ, DRAIN_RELAY=NOWHERE)
    out: dict[str, Any] = {"real": [], "simulated": []}
    for sitting in range(1, sittings + 1):
        real_mix: dict[str, float] | None = None
        if relay is not None:
            real = measured_drain([sys.executable, "-m", "drain", "worker", "--burst", "--processes",
                                   str(real_processes), "--log-level", "ERROR"], dict(env, DRAIN_RELAY=relay),
                                  count, size, pin=pin)
            real.update(worker_processes=real_processes, sitting=sitting)
            out["real"].append(real)
            real_mix = real["mix"]
            print(json.dumps(_brief(real, "real")), file=sys.stderr, flush=True)
        for processes in levels:
            row = measured_drain(simulated_command(processes, send_s, lean), env, count, size, pin=pin)
            row.update(worker_processes=processes, sitting=sitting)
            if real_mix is not None:
                row["mix_ok"], row["mix_problems"] = mix_check(real_mix, row["mix"])
            out["simulated"].append(row)
            print(json.dumps(_brief(row, "simulated")), file=sys.stderr, flush=True)
    out["projection"] = projection(out["real"] + out["simulated"])
    return out


def _brief(row: dict[str, Any], kind: str) -> dict[str, Any]:
    return {"kind": kind, **{k: v for k, v in row.items() if k != "mix"}}


def markdown(result: dict[str, Any], machine: dict[str, Any]) -> str:
    lines = [f"Machine: {machine['cpus']} CPUs (shared); {machine['date']}; {machine['note']}", "",
             "| sitting | workers | processes | drain msg/s | redis-server share of a core | Redis µs/msg | "
             "msg/s per Redis core | Redis wake-ups/msg | Redis socket reads/msg | worker CPU µs/msg "
             "(of which system) | workers' share of the cores | commands/msg | mix vs real |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [("real (SMTP sink)", r) for r in result["real"]] + [("simulated", r) for r in result["simulated"]]
    rows.sort(key=lambda kr: kr[1]["sitting"])
    for kind, r in rows:
        mix = "-" if kind.startswith("real") or "mix_ok" not in r else (
            "within 10 %" if r["mix_ok"] else "DIFFERS: " + "; ".join(r["mix_problems"]))
        lines.append(f"| {r['sitting']} | {kind} | {r['worker_processes']} | {r['msg_per_s']} | "
                     f"{r['redis_core_share']} | {r['redis_cpu_us_per_msg']} | {r['msg_per_s_per_redis_core']} | "
                     f"{r['redis_wakes_per_msg']} | {r['redis_reads_per_msg']} | {r['worker_cpu_us_per_msg']} "
                     f"({r['worker_sys_us_per_msg']}) | {r['worker_core_share']} | {r['commands_per_msg']} | {mix} |")
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for kind, r in rows:
        groups.setdefault((kind, r["worker_processes"]), []).append(r)
    lines += ["", "Medians over the sittings:", "", "| workers | processes | runs | redis-server share of a core | "
              "Redis µs/msg | msg/s per Redis core | Redis wake-ups/msg |", "|---|---|---|---|---|---|---|"]
    for (kind, processes), group in groups.items():
        lines.append(f"| {kind} | {processes} | {len(group)} | {_median(group, 'redis_core_share')} | "
                     f"{_median(group, 'redis_cpu_us_per_msg')} | {_median(group, 'msg_per_s_per_redis_core')} | "
                     f"{_median(group, 'redis_wakes_per_msg')} |")
    if result["simulated"]:
        busiest = max(result["simulated"], key=lambda r: r["redis_core_share"])
        lines += ["", f"Busiest run: redis-server used {busiest['redis_core_share']} of a core while the "
                  f"workers used {busiest['worker_core_share']} cores ({busiest['worker_cpu_us_per_msg']} µs of "
                  f"worker CPU per message against Redis's {busiest['redis_cpu_us_per_msg']}): a Redis core "
                  "kept busy needs that many times more cores of workers than this machine has."]
    fit = result.get("projection") or {}
    if "none" in fit:
        lines += ["", f"No projection to a busy Redis: {fit['none']}."]
    elif fit:
        lines += ["", f"Projection (a straight line through every run above, Redis µs/msg against its "
                  f"wake-ups/msg; worst miss {fit['worst_residual_us']} µs): each wake-up costs "
                  f"{fit['us_per_wake']} µs, and a Redis that never sleeps (busy) would spend "
                  f"{fit['busy_us_per_msg']} µs per message: ~{fit['busy_msg_per_s_per_core']} msg/s per Redis "
                  "core (drain side only; an extrapolation, not a measurement)."]
    if result["real"] and result["simulated"]:
        real = result["real"][-1]
        last = max((r for r in result["simulated"] if r["sitting"] == real["sitting"]),
                   key=lambda r: r["redis_core_share"])
        lines += ["", f"Commands per message, real bench vs the busiest simulated run of sitting {real['sitting']} "
                  f"({last['worker_processes']} processes):", "", "| command | real | simulated |", "|---|---|---|"]
        real_mix, sim_mix = real["mix"], last["mix"]
        for name in sorted(set(real_mix) | set(sim_mix), key=lambda n: -max(real_mix.get(n, 0), sim_mix.get(n, 0))):
            if max(real_mix.get(name, 0), sim_mix.get(name, 0)) >= 0.005:
                lines.append(f"| {name} | {real_mix.get(name, 0)} | {sim_mix.get(name, 0)} |")
    return "\n".join(lines)


def _median(rows: list[dict[str, Any]], key: str) -> float | int:
    value = float(statistics.median(r[key] for r in rows))
    return round(value) if value > 1000 else round(value, 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saturate", action="store_true", help="(the mode's name, as scripts/bench passes it)")
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--levels", default="2,4,8,12", help="simulated worker processes, one run each")
    parser.add_argument("--real-processes", type=int, default=2, help="worker processes of the real bench")
    parser.add_argument("--no-real", action="store_true", help="skip the real bench (no mix check)")
    parser.add_argument("--sink", choices=["auto", "aiosmtpd"], default="auto")
    parser.add_argument("--send-ms", type=float, default=SEND_MS,
                        help="how long the simulated relay takes to answer each message (no CPU)")
    parser.add_argument("--lean", action="store_true",
                        help="simulated lanes skip the steps before the send (less Python per message)")
    parser.add_argument("--pin", action="store_true",
                        help="redis-server on a CPU of its own (the last), the workers on the others (not the sink)")
    parser.add_argument("--sittings", type=int, default=1, help="times to run the real bench and every level, in turn")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--simulated-worker", type=int, metavar="PROCESSES", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.simulated_worker:
        simulated_worker(args.simulated_worker, args.send_ms / 1000, args.lean)
        return
    try:
        levels = [int(n) for n in args.levels.split(",")]
    except ValueError:
        parser.error(f"--levels takes worker process counts like 2,4,8, not {args.levels!r}")
    if args.messages < 100 or any(n < 1 for n in levels) or args.sittings < 1:
        parser.error("--messages must be at least 100, every level and --sittings at least 1")
    import bench

    with ExitStack() as stack:
        relay, sink = (None, "no real bench") if args.no_real else stack.enter_context(
            bench.smtp_sink(args.sink == "auto"))
        result = run(levels, args.messages, args.size, args.real_processes, relay, args.send_ms / 1000, args.lean,
                     args.pin, args.sittings)
    settle = os.environ.get("DRAIN_SETTLE_EVERY", "default")
    pinned = "; redis-server pinned to a CPU of its own, the workers to the others" if args.pin else ""
    machine = {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"),
               "note": f"{args.messages} messages of {args.size} B a run, DRAIN_SETTLE_EVERY {settle}, measured "
                       f"between {SKIP:.0%} and {1 - SKIP:.0%} of each backlog; real bench sink: {sink}{pinned}"}
    text = markdown(result, machine)
    print(text)
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, **result}, indent=1))
        args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
