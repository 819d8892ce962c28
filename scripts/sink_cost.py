"""CPU per message of the size series' sink: Postfix's smtp-sink (what the series used) against
scripts/bench_sink.py's asyncio sink, each in its own process, fed the size series' messages
over one pipelined session by drain's own relay client (the DATA bytes drain sends).

    .venv/bin/python scripts/sink_cost.py --messages 3000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_postfix
import bench_sink
import bench_sizes

from drain.worker.delivery import Relay, RelayConfig


def measure(sink: bench_postfix.CountingSink, raw: bytes, count: int) -> dict[str, float]:
    relay = Relay(RelayConfig.from_url(sink.url))
    try:
        sink.mark()
        used, started = sink.cpu_s(), time.perf_counter()
        for _ in range(count):
            result = relay.send("billing@sender.example.com", ["user@example.com"], raw)
            if result.kind != "delivered":
                raise RuntimeError(f"the sink answered {result}")
        sink.wait_for(count, started, timeout_s=120)
        seconds = time.perf_counter() - started
        cpu = sink.cpu_s() - used
    finally:
        relay.close()
    return {"sink_cpu_us_per_msg": round(cpu / count * 1e6, 1),
            "sink_cpu_us_per_kb": round(cpu / count * 1e6 / (len(raw) / 1024), 2),
            "msg_per_s_one_session": round(count / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000, help="messages per size and sink")
    parser.add_argument("--sizes", default="2048,20480,102400", help="comma-separated sizes in bytes")
    parser.add_argument("--out", type=Path, help="write JSON here")
    args = parser.parse_args()
    sinks: list[tuple[str, type[bench_postfix.CountingSink]]] = [("asyncio sink", bench_sink.CountingRelay)]
    if bench_postfix.tool("smtp-sink") is not None:
        sinks.insert(0, ("Postfix smtp-sink", bench_postfix.CountingSink))
    rows: list[dict[str, Any]] = []
    for name, kind in sinks:
        with kind() as sink:
            for size in (int(s) for s in args.sizes.split(",") if s):
                raw = bench_sizes.message(3, size)
                row = {"sink": name, "size": size, "label": bench_sizes.label(size), "bytes": len(raw),
                       **measure(sink, raw, args.messages)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
