"""CPU and minor page faults of a whole `drain worker --burst --processes 1` process per
message, for one or more trees of drain (each tree's worker run from that tree), alternated,
on the size series' messages delivered into scripts/bench_sink.py's sink. Each tree's
start-up alone (an empty queue) is measured first: subtract it, divided by the count.

    .venv/bin/python scripts/worker_faults.py --sizes 2048,20480,102400 --messages 3000 \\
        /work/wt/base /work/wt/mine
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sink
import bench_sizes
from bench import redis_server

from drain.api import Client
from drain.flow import ratelimit
from drain.settings import Settings


def _worker(tree: str, env: dict[str, str]) -> tuple[float, float, float, int]:
    """Run one burst worker from `tree`: (wall s, user s, system s, minor faults)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "drain", "worker", "--burst", "--processes", "1", "--log-level",
                    "WARNING"], env=dict(env, PYTHONPATH=tree), cwd=tree, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
            after.ru_minflt - before.ru_minflt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", help="worktrees of drain to compare")
    parser.add_argument("--sizes", default="2048,20480,102400")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=2, help="runs per size and tree (alternated)")
    args = parser.parse_args()
    with redis_server() as client, bench_sink.CountingRelay() as sink:
        url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
        env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=sink.url)
        for tree in args.trees:
            client.flushdb()
            for _ in range(2):
                _wall, user, system, faults = _worker(tree, env)
                print(f"start-up {tree}: {(user + system) * 1e3:.0f} ms CPU, {faults} minor faults", flush=True)
        for size in (int(s) for s in args.sizes.split(",") if s):
            raws = [bench_sizes.message(i, size) for i in range(args.messages)]
            for _ in range(args.runs):
                for tree in args.trees:
                    client.flushdb()
                    ratelimit.pause(client)
                    Client(client, Settings(redis_url=url, relay=sink.url)).enqueue_many(raws)
                    ratelimit.resume(client)
                    wall, user, system, faults = _worker(tree, env)
                    n = args.messages
                    print(f"{bench_sizes.label(size)} {tree}: {(user + system) / n * 1e6:.0f} µs CPU/msg "
                          f"(user {user / n * 1e6:.0f}, system {system / n * 1e6:.0f}), {faults / n:.1f} minor "
                          f"faults/msg, {n / wall:.0f} msg/s", flush=True)


if __name__ == "__main__":
    main()
