"""A three-cell run with one cell killed under load and restarted: shows that the other cells'
mail goes on being accepted and delivered while it is down, and that nothing is lost.

Three redis-servers (append-only, fsync always), `drain worker` serving every cell (a group
per cell), an aiosmtpd sink. Enqueue a first wave, SIGKILL cell c1 while the workers drain,
enqueue a second wave (routed around c1), wait for c0 and c2 to finish, show `drain status`,
restart c1, wait for everything, and check: every accepted message delivered exactly once by
Message-ID, books balanced per cell and in total.

    .venv/bin/python scripts/cells_chaos.py --messages 3000 --out benchmarks/cells-chaos-DATE.md
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.settings import Settings
from drain.store.store import Store
from tests.chaos_kit import RedisProc, wait_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000, help="messages per wave (two waves)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory() as tmp, Sink(keep=True) as sink:
        cells = [RedisProc(Path(tmp) / f"c{i}").start() for i in range(3)]
        url = ",".join(c.url for c in cells)
        settings = Settings(redis_url=url, relay=sink.url)
        env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=sink.url)
        api = Client.connect(settings)
        stores = [Store(redis.Redis(port=c.port), settings) for c in cells]

        def drain(*argv: str) -> str:
            done = subprocess.run([sys.executable, "-m", "drain", *argv], env=env, capture_output=True, timeout=60,
                                  check=False)
            return (done.stdout + done.stderr).decode()

        workers = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--processes", "1",
                                    "--log-level", "ERROR"], env=env, stderr=subprocess.DEVNULL)
        try:
            started = time.monotonic()
            first = api.enqueue_many([synthetic(i) for i in range(args.messages)]).ids
            say(f"wave 1: {len(first)} accepted, by cell {dict(Counter(i.split('.')[0] for i in first))}")
            wait_until(lambda: len(sink.messages) >= args.messages // 3, 120, "a third delivered")
            cells[1].kill()
            say(f"t={time.monotonic() - started:.1f}s: cell c1 KILLED (SIGKILL) with {len(sink.messages)} delivered")
            second = api.enqueue_many([synthetic(args.messages + i) for i in range(args.messages)]).ids
            say(f"wave 2: {len(second)} accepted while c1 is down, by cell "
                f"{dict(Counter(i.split('.')[0] for i in second))}")

            def others_done() -> bool:
                return all(s.books().queued == 0 for s in (stores[0], stores[2]))

            wait_until(others_done, 300, "c0 and c2 to deliver all their mail")
            say(f"t={time.monotonic() - started:.1f}s: c0 and c2 have delivered all their mail; sink holds "
                f"{len(sink.messages)}")
            say("\n$ drain status  (c1 down)\n" + drain("status"))
            cells[1].start()
            say(f"t={time.monotonic() - started:.1f}s: cell c1 restarted on its append-only file")
            total = len(first) + len(second)
            wait_until(lambda: sum(s.books().queued for s in stores) == 0 and len(sink.messages) >= total, 300,
                       "all delivered")
            say(f"t={time.monotonic() - started:.1f}s: all done")
            per_cell = [s.books() for s in stores]
            say("books per cell: " + "; ".join(f"c{i} accepted {b.accepted} delivered {b.delivered} "
                                               f"balanced {b.balanced}" for i, b in enumerate(per_cell)))
            say("\n$ drain status\n" + drain("status"))
        finally:
            workers.terminate()
            workers.wait(timeout=120)
            for c in cells:
                c.stop()
        got = Counter(m.message_id for m in sink.messages)
        lost = total - len(got)
        twice = sum(n - 1 for n in got.values() if n > 1)
        say(f"\naccepted {total}; delivered distinct {len(got)}; lost {lost}; delivered twice {twice}")
    text = "\n".join(lines)
    if args.out:
        args.out.write_text("```\n" + text + "\n```\n")
    sys.exit(0 if lost == 0 else 1)


if __name__ == "__main__":
    main()
