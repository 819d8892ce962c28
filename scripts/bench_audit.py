"""What the worker's self-audit (drain/worker/audit.py) costs: the Redis CPU of its one read per
period (HGETALL of the in-flight owners, for several sizes of in-flight mail, from INFO
commandstats of a private redis-server), the worker CPU its ledger adds per message (a claim
of 100, half journalled, half settled), and the memory of the outcomes it keeps.

    flock /work/wt/bench.lock nice -n 19 .venv/bin/python scripts/bench_audit.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import redis

from drain.demo.sink import free_port
from drain.store import events, keys
from drain.store.embedded import spawn_on_port
from drain.store.store import Outcome
from drain.worker.audit import AUDIT_EVERY_S, RECENT_MOST, Ledger

REPLY = "250 2.0.0 Ok: queued as 4Xk9Lp2QzTz1"


def _delivered(msg_id: str) -> Outcome:
    return Outcome(msg_id, "delivered", envelope=REPLY, event=events.delivered_data(REPLY, 1, 0.73))


def read_cost(sizes: tuple[int, ...] = (100, 1000, 5000), calls: int = 50) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        proc = spawn_on_port(port, Path(workdir))
        try:
            client = redis.Redis(port=port)
            for size in sizes:
                client.delete(keys.INFLIGHT)
                client.hset(keys.INFLIGHT, mapping={str(100_000_000 + i): f"host-{i % 16}-12345-abcd1234/{i % 3}"
                                                    for i in range(size)})
                client.config_resetstat()
                for _ in range(calls):
                    client.hgetall(keys.INFLIGHT)
                per_call = client.info("commandstats")["cmdstat_hgetall"]["usec_per_call"]
                print(f"audit read (HGETALL) with {size:>5} ids in flight: {per_call:6.0f} us of Redis CPU per call,"
                      f" {per_call / AUDIT_EVERY_S:6.1f} us/s per worker process")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def ledger_cost(rounds: int = 200, repeats: int = 7) -> None:
    ledger = Ledger()
    ids = [str(i) for i in range(100)]
    outcomes = [_delivered(i) for i in ids]
    per_message = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(rounds):
            ledger.claimed("w", ids)
            ledger.journalled("w", outcomes[:50])
            ledger.settled("w", outcomes[50:])
        per_message.append((time.perf_counter() - start) / (rounds * len(ids)) * 1e6)
    print(f"ledger CPU per message (claimed, journalled or settled): median {statistics.median(per_message):.2f} us")


def ledger_memory(count: int = 20_000) -> None:
    tracemalloc.start()
    ledger = Ledger(most=count)
    ledger.settled("w", [_delivered(str(10_000_000 + i)) for i in range(count)])
    per_entry = tracemalloc.get_traced_memory()[0] / count
    tracemalloc.stop()
    print(f"memory per kept delivered outcome: {per_entry:.0f} bytes; {RECENT_MOST:,} kept:"
          f" {per_entry * RECENT_MOST / 1e6:.1f} MB")
    del ledger


if __name__ == "__main__":
    read_cost()
    ledger_cost()
    ledger_memory()
