"""Instructions redis-server executes per enqueued message (valgrind's callgrind), a figure the
other processes of a shared machine do not move, unlike CPU time.

    .venv/bin/python scripts/profile_enqueue_callgrind.py OUTDIR [--messages 3000] [--size 2048]

The messages are those of the size series (scripts/bench_sizes.py: 2 KB text, 20 KB HTML),
enqueued by Client.enqueue_many with tracing on; only the enqueue is counted (dump 1:
callgrind_annotate OUTDIR/callgrind.out.*.1 says which functions, Lua's or Redis's).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import redis
from bench_sizes import message
from profile_redis import callgrind, callgrind_server, instructions

from drain.demo.sink import free_port
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import connection, embedded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--events-off", action="store_true", help="DRAIN_TRACE off: no events, no lookup index")
    args = parser.parse_args()
    callgrind_server(args.out)
    connection._CLIENT_OPTIONS.update(socket_timeout=600, socket_connect_timeout=600)
    items = [message(i, args.size) for i in range(args.messages)]
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = embedded.spawn_on_port(port, Path(tmp), timeout_s=120)
        try:
            client = redis.Redis(port=port)
            settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", relay="smtp://127.0.0.1:1",
                                trace=not args.events_off)
            ratelimit.pause(client)
            producer = Client.connect(settings)
            producer.enqueue_many(items[:10])  # scripts loaded, keys made
            callgrind(proc.pid, "-i", "on")
            producer.enqueue_many(items[10:])
            callgrind(proc.pid, "-d")
            callgrind(proc.pid, "-i", "off")
            count = args.messages - 10
            print(json.dumps({"messages": count, "size": args.size, "events": not args.events_off,
                              "queued": client.dbsize(),
                              "enqueue_instructions_per_msg": round(instructions(args.out, 1) / count)}))
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
