"""Enqueue CPU per message, producer and redis-server, for before/after comparisons on a busy box.

    .venv/bin/python scripts/profile_enqueue.py SIZE [COUNT] [--events-off]

The two paths of `scripts/bench --only enqueue` (bench_enqueue.py: `Client.enqueue_many` with
raw bytes, `Store.enqueue_many` with envelopes given) on a redis-server of its own, flushed and
paused before each run; two runs per path, the one with less producer CPU kept. Prints the
producer's CPU (this process, helper threads included; and the main thread's own, which
bounds one producer's rate while its helper threads work beside it on the other core),
redis-server's (INFO cpu: user and system time) and the wall rate. CPU per message moves far less with the load
of other processes than the wall rate does, so this is what to alternate between two
worktrees when the machine is shared.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from bench_sizes import message

from drain.demo.sink import free_port
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.message import envelope_from_headers
from drain.settings import Settings
from drain.store.embedded import spawn_on_port


def _redis_cpu(client: redis.Redis) -> tuple[float, float]:
    """redis-server's CPU seconds so far: user, system."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]), float(info["used_cpu_sys"])


def main(size: int, count: int, trace: bool) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = spawn_on_port(port, Path(tmp))
        client = redis.Redis(port=port)
        api = Client(client, Settings(redis_url=f"redis://127.0.0.1:{port}/0", trace=trace))
        raws = [message(i, size) for i in range(count)]
        items = [(raw, envelope_from_headers(raw), None) for raw in raws]

        def run(name: str, action: Callable[[], object]) -> None:
            best: tuple[float, float, float, float, float] | None = None
            for _ in range(2):
                client.flushdb()
                ratelimit.pause(client)
                redis0, cpu0, wall0 = _redis_cpu(client), time.process_time(), time.perf_counter()
                main0 = time.thread_time()
                action()
                redis1 = _redis_cpu(client)
                got = ((time.process_time() - cpu0) / count * 1e6, (redis1[0] - redis0[0]) / count * 1e6,
                       count / (time.perf_counter() - wall0), (time.thread_time() - main0) / count * 1e6,
                       (redis1[1] - redis0[1]) / count * 1e6)
                best = got if best is None or got[0] < best[0] else best
            assert best is not None
            print(f"{size} events={'on' if trace else 'off'} {name:36s} producer {best[0]:6.1f} µs "
                  f"(main thread {best[3]:6.1f})  redis {best[1] + best[4]:6.1f} µs (user {best[1]:.1f}, "
                  f"sys {best[4]:.1f})  {best[2]:8.0f} msg/s", flush=True)

        run("Client.enqueue_many(raw bytes)", lambda: api.enqueue_many(raws))
        run("Store.enqueue_many(envelopes given)", lambda: api.store.enqueue_many(items))
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 20_000,
         "--events-off" not in sys.argv)
