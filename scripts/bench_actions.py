"""What operator actions on queued mail cost on a large queue (drain/ops/actions.py).

Starts a private redis-server, queues N messages (2 KB, spread over 100 destination
domains, on the backlog lane, delivery paused so nothing moves), parks a share of them
behind a paused domain, defers a share, and times, in this process:
  - a dry run that matches nothing (every queued message read: the selection's full cost),
  - hold, flush and delete of one domain's mail (1 % of the queue),
  - one lifetime scan page (housekeeping's bounded share).
The books are checked to balance after each step.

    .venv/bin/python scripts/bench_actions.py --messages 100000 [--out benchmarks/actions.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import free_port
from drain.intake.api import Client
from drain.ops import actions, control
from drain.ops.select import Selector
from drain.settings import Settings
from drain.store import keys
from drain.store.embedded import spawn_on_port
from drain.worker import lifetime

DOMAINS = 100


def timed(label: str, rows: list[dict[str, Any]], step: Callable[[], int]) -> None:
    start = time.perf_counter()
    count = step()
    seconds = time.perf_counter() - start
    rows.append({"step": label, "messages": count, "seconds": round(seconds, 3)})
    print(f"{label:<44} {count:>8} msgs {seconds:8.3f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = spawn_on_port(port, Path(tmp))
        try:
            rows = run(port, args.messages)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    if args.out:
        args.out.write_text(json.dumps({"messages": args.messages, "rows": rows}, indent=1) + "\n")


def run(port: int, total: int) -> list[dict[str, Any]]:
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", trace=True)
    client = Client(redis.Redis(port=port), settings)
    store = client.store
    control.pause(store)
    domains = [f"d{n}.example.org" for n in range(DOMAINS)]
    chunk = 10_000
    for start in range(0, total, chunk):
        batch = range(start, min(total, start + chunk))
        client.enqueue_many([synthetic(i, domain=domains[i % DOMAINS]) for i in batch], lane="backlog")
    # Defer one domain's mail and park another's, as workers would (deferred set, parked list).
    ids = [i.decode() for i in client.redis.lrange(keys.READY, 0, -1)]
    deferred = [i for n, i in enumerate(ids) if n % DOMAINS == 1]
    parked = [i for n, i in enumerate(ids) if n % DOMAINS == 2]
    moved = set(deferred) | set(parked)
    rest = [i for i in ids if i not in moved]
    pipe = client.redis.pipeline(transaction=True)
    pipe.delete(keys.READY)
    for start in range(0, len(rest), chunk):
        pipe.rpush(keys.READY, *rest[start:start + chunk])
    pipe.zadd(keys.DEFERRED, dict.fromkeys(deferred, time.time() + 3600))
    pipe.rpush(keys.parked(domains[2]), *parked)
    pipe.sadd(keys.PARKED_DOMAINS, domains[2])
    pipe.hincrby(keys.BOOKS, "parked", len(parked))
    pipe.execute()
    assert store.books().balanced, store.books()
    rows: list[dict[str, Any]] = []
    print(f"{total:,} queued ({len(deferred):,} deferred, {len(parked):,} parked)")
    timed("dry run matching nothing (reads every message)", rows,
          lambda: len(actions.run(store, "delete", Selector(sender="nobody@*"), dry_run=True).ids) or total)
    timed("hold one ready domain (1 %)", rows, lambda: actions.run(store, "hold", Selector(domain=domains[3])).moved)
    timed("flush the deferred domain (1 %)", rows,
          lambda: actions.run(store, "flush", Selector(domain=domains[1])).moved)
    timed("delete the parked domain (1 %)", rows,
          lambda: actions.run(store, "delete", Selector(domain=domains[2])).moved)
    timed("bounce by id (100 ids)", rows,
          lambda: actions.run(store, "bounce", Selector(ids=tuple(ids[4:4 + 100 * DOMAINS:DOMAINS]))).moved)
    timed("lifetime scan, one page", rows, lambda: len(lifetime._page(store)))
    books = store.books()
    assert books.balanced, books
    return rows


if __name__ == "__main__":
    main()
