"""redis-server's own CPU per message of an enqueue, user and system time apart, for
before/after comparisons of lua/enqueue.lua and what the producer sends it.

    .venv/bin/python scripts/profile_enqueue_redis.py [SIZE] [COUNT]

On a redis-server of its own (flushed and paused before each run): `Store.enqueue_many`
with envelopes given and `Client.enqueue_many` with raw bytes, five runs each; medians (and
the least) of INFO cpu's used_cpu_user and used_cpu_sys per message. Run it from the tree
to measure (PYTHONPATH=that tree), alternating two trees in one sitting; callgrind
(`scripts/profile_redis.py --callgrind`) counts instructions, which the load of other
processes does not move.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
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

RUNS = 5


def _cpu(client: redis.Redis) -> tuple[float, float]:
    info = client.info("cpu")
    return float(info["used_cpu_user"]), float(info["used_cpu_sys"])


def main(size: int, count: int) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = spawn_on_port(port, Path(tmp))
        try:
            client = redis.Redis(port=port)
            api = Client(client, Settings(redis_url=f"redis://127.0.0.1:{port}/0"))
            raws = [message(i, size) for i in range(count)]
            items = [(raw, envelope_from_headers(raw), None) for raw in raws]
            paths: dict[str, Callable[[], object]] = {
                "Store.enqueue_many(envelopes given)": lambda: api.store.enqueue_many(items),
                "Client.enqueue_many(raw bytes)": lambda: api.enqueue_many(raws)}
            for name, action in paths.items():
                user: list[float] = []
                system: list[float] = []
                for _ in range(RUNS):
                    client.flushdb()
                    ratelimit.pause(client)
                    before = _cpu(client)
                    action()
                    after = _cpu(client)
                    user.append((after[0] - before[0]) / count * 1e6)
                    system.append((after[1] - before[1]) / count * 1e6)
                print(f"{size} {name:36s} redis-server µs/msg: user {statistics.median(user):.2f} "
                      f"sys {statistics.median(system):.2f} (least: user {min(user):.2f} sys {min(system):.2f})",
                      flush=True)
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2048, int(sys.argv[2]) if len(sys.argv) > 2 else 20_000)
