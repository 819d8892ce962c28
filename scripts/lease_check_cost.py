"""What the ownership check before each send costs (issue 12): Redis calls and time per
message, with the check as shipped (asked only when the lease may have lapsed) and forced on
every message. Starts its own redis-server and SMTP sink; prints one JSON document.

    .venv/bin/python scripts/lease_check_cost.py --messages 5000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import redis

from drain import validate
from drain.demo.seeding import synthetic
from drain.demo.sink import Sink, free_port
from drain.intake.api import Client
from drain.settings import Settings
from drain.store.embedded import spawn_on_port
from drain.worker import batch
from drain.worker.delivery import Relay, RelayConfig


def run(client: redis.Redis, settings: Settings, sink: Sink, messages: int, check_after: float) -> dict[str, float]:
    client.flushdb()
    api = Client(client, settings)
    api.enqueue_many([synthetic(i) for i in range(messages)])
    client.config_resetstat()
    batch.LEASE_CHECK_AFTER = check_after
    relay = Relay(RelayConfig.from_url(sink.url), timeout_s=10)
    started = time.perf_counter()
    done = 0
    while done < messages:
        claimed = batch.Batch(api.store, relay, "bench-worker", validate.Limits()).run()
        if not claimed:
            break
        done += claimed
    elapsed = time.perf_counter() - started
    relay.close()
    stats = client.info("commandstats")
    calls = sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_config", "cmdstat_info"))
    multi = int(stats.get("cmdstat_multi", {}).get("calls", 0))
    return {"messages": done, "seconds": round(elapsed, 3), "msg_per_s": round(done / elapsed),
            "redis_commands_per_msg": round(calls / done, 2), "check_round_trips_per_msg": round(multi / done, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    port = free_port()
    proc = spawn_on_port(port, Path(tempfile.mkdtemp()))
    try:
        client = redis.Redis(port=port)
        with Sink(keep=False) as sink:
            settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", relay=sink.url, batch_size=100,
                                settle_every=3)
            shipped = run(client, settings, sink, args.messages, batch.LEASE_CHECK_AFTER)
            every = run(client, settings, sink, args.messages, 0.0)
            # The check's own cost, one MULTI (SET lease + HGET owner), timed alone.
            client.hset("drain:inflight", "x", "bench-worker")
            b = batch.Batch(Client(client, settings).store, Relay(RelayConfig.from_url(sink.url)), "bench-worker",
                            validate.Limits())
            started = time.perf_counter()
            for _ in range(2000):
                b.lease_written = float("-inf")
                b._still_mine("x")
            one_check_us = (time.perf_counter() - started) / 2000 * 1e6
    finally:
        proc.terminate()
    print(json.dumps({"as_shipped": shipped, "checked_every_message": every,
                      "one_check_us": round(one_check_us, 1)}, indent=1))


if __name__ == "__main__":
    main()
