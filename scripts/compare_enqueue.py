"""Before and after of `scripts/bench --only enqueue`, run alternately in one sitting, as one
Markdown table: each pair of runs (msg/s medians with their rounds, the ratio; producer,
main-thread and redis-server CPU per message) and a line over all rounds of each row.

    .venv/bin/python scripts/compare_enqueue.py --before b1.json b2.json --after a1.json a2.json

The files are `scripts/bench --only enqueue --out FILE` outputs, given in the order they
ran: before 1 beside after 1, and so on.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

NAMES = {"Client.enqueue_many(raw bytes)": "API", "Store.enqueue_many(envelopes given)": "store (envelopes given)",
         "Client.enqueue_many(raw bytes), 2 producer processes at once": "API, 2 producers"}
CPU = ("client_cpu_us", "main_thread_cpu_us", "redis_cpu_us")


def _rows(paths: list[Path]) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], list[tuple[Any, Any]]]:
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    loads = []
    for path in paths:
        data = json.loads(path.read_text())
        loads.append((data["machine"].get("load_average"), data["machine"].get("load_average_end")))
        for row in data["rows"]:
            if row.get("part") == "enqueue":
                rows.setdefault((row["label"], NAMES.get(row["name"], row["name"])), []).append(row)
    return rows, loads


def _median(rows: list[dict[str, Any]], figure: str) -> str:
    values = [r[figure] for r in rows if figure in r]
    return f"{statistics.median(values):.1f}" if values else ""


def table(before: list[Path], after: list[Path]) -> str:
    old, old_loads = _rows(before)
    new, new_loads = _rows(after)
    lines = ["| size | path | pair | before msg/s [rounds] | after msg/s [rounds] | after/before | producer CPU "
             "µs/msg before → after | main thread µs/msg before → after | redis-server CPU µs/msg before → after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, olds in old.items():
        news = new.get(key, [])
        label, name = key
        for k, (o, n) in enumerate(zip(olds, news, strict=False), 1):
            cpu = " | ".join(f"{o.get(f, '')} → {n.get(f, '')}" if f in o else "" for f in CPU)
            ratio = n["msg_per_s"] / o["msg_per_s"]
            lines.append(f"| {label} | {name} | {k} | {o['msg_per_s']:,.0f} {o['msg_per_s_each']} | "
                         f"{n['msg_per_s']:,.0f} {n['msg_per_s_each']} | {ratio:.2f} | {cpu} |")
        if olds and news:
            each_old = [x for r in olds for x in r["msg_per_s_each"]]
            each_new = [x for r in news for x in r["msg_per_s_each"]]
            cpu = " | ".join(f"{_median(olds, f)} → {_median(news, f)}" if _median(olds, f) else "" for f in CPU)
            med_old, med_new = statistics.median(each_old), statistics.median(each_new)
            lines.append(f"| {label} | {name} | **all** | **{med_old:,.0f}** (best {max(each_old):,}) | "
                         f"**{med_new:,.0f}** (best {max(each_new):,}) | {med_new / med_old:.2f} | {cpu} |")
    loads = "; ".join(f"pair {k}: before {o[0]}-{o[1]}, after {n[0]}-{n[1]}"
                      for k, (o, n) in enumerate(zip(old_loads, new_loads, strict=False), 1))
    return "\n".join(lines) + f"\n\nLoad average at the start and end of each run: {loads}.\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", nargs="+", type=Path, required=True)
    parser.add_argument("--after", nargs="+", type=Path, required=True)
    args = parser.parse_args()
    print(table(args.before, args.after))


if __name__ == "__main__":
    main()
