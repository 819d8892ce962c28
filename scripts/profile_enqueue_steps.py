"""Where a producer's CPU goes per message, step by step, for before/after comparisons.

    .venv/bin/python scripts/profile_enqueue_steps.py LABEL SIZE [--out FILE.json]

For 5,000 messages of the size series (scripts/bench_sizes.py: 2 KB text, 20 KB HTML) on a
redis-server of its own: process CPU per message (best of 5) of each step of
`Client.enqueue_many` done alone (the preparation with the envelope from the headers, the
stored body form, the envelope JSON, the received event's data and lookup records, the
chunk's script ARGV with its bodies packed inline, the wire's RESP packing of that ARGV), then of
the whole call (best of 3): all its threads, and its main thread alone, which bounds the
rate of one producer while its helper threads compress and send beside it. CPU time moves
less with the load of other processes than wall time does; run it in two worktrees in turn.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from bench_sizes import message

from drain.demo.sink import free_port
from drain.flow import ratelimit
from drain.intake.api import Client, submissions
from drain.message import envelope_from_headers
from drain.settings import Settings
from drain.store import body, events
from drain.store.embedded import spawn_on_port
from drain.store.enqueue import Enqueue
from drain.store.enqueue_wire import packed

COUNT = 5000


def _best(action: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.process_time()
        action()
        times.append(time.process_time() - started)
    return round(min(times) / COUNT * 1e6, 2)


def steps(client: redis.Redis, api: Client, size: int) -> dict[str, float]:
    raws = [message(i, size) for i in range(COUNT)]
    out = {"prepare (envelope from the headers, checks, tenant)": _best(
        lambda: list(submissions(api.prepare, api.settings, raws, None, "api", [])))}
    out["  of it: envelope from the headers"] = _best(lambda: [envelope_from_headers(r) for r in raws])
    envs = [envelope_from_headers(r) for r in raws]
    out["stored body form (body.pack, one by one)"] = _best(lambda: [body.pack(r) for r in raws])
    out["envelope JSON"] = _best(lambda: [e.to_json() for e in envs])
    out["received event data + lookup records"] = _best(lambda: [
        events.received_parts(r, e.sender, e.recipients, "api", "sender.example.com", e.to_json())
        for r, e in zip(raws, envs, strict=True)])
    prepared = list(submissions(api.prepare, api.settings, raws, None, "api", []))
    enqueue = Enqueue(client, api.settings, api.store.scripts)
    chunks = list(enqueue._chunks([(r, e, None) for r, e, _o, _s in prepared], iter([o for *_x, o, _s in prepared]),
                                  "api"))
    out["chunk ARGV (Enqueue._call, bodies packed inline)"] = _best(lambda: [enqueue._call(c, "fresh") for c in chunks])
    calls = [enqueue._call(c, "fresh") for c in chunks]
    conn = client.connection_pool.get_connection()
    out["RESP packing of the ARGV (enqueue_wire.packed)"] = _best(
        lambda: [packed(conn, ("EVALSHA", "x" * 40, 10, *(["k"] * 10), *c.args)) for c in calls])
    client.connection_pool.release(conn)

    def whole() -> tuple[float, float]:
        client.flushdb()
        ratelimit.pause(client)
        cpu0, main0 = time.process_time(), time.thread_time()
        api.enqueue_many(raws)
        return time.process_time() - cpu0, time.thread_time() - main0

    runs = [whole() for _ in range(3)]
    out["Client.enqueue_many: all threads"] = round(min(r[0] for r in runs) / COUNT * 1e6, 2)
    out["Client.enqueue_many: main thread"] = round(min(r[1] for r in runs) / COUNT * 1e6, 2)
    return out


def main(label: str, size: int, out: Path | None) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = spawn_on_port(port, Path(tmp))
        try:
            client = redis.Redis(port=port)
            api = Client(client, Settings(redis_url=f"redis://127.0.0.1:{port}/0"))
            row = {"label": label, "size": size, "steps_us": steps(client, api, size)}
        finally:
            proc.terminate()
            proc.wait()
    print(json.dumps(row), flush=True)
    if out:
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else None)
