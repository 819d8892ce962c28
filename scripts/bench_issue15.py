"""Issue 15's benchmark as one run (`scripts/bench --only tenants`), against its own
redis-server, `drain worker` processes and two relays in this process (replay_relay's asyncio
protocol, a primary relay and its fallback; aiosmtpd cost about 650 µs of CPU per message, which
capped the box near 450 msg/s), so every (message, recipient) that reaches a relay is counted:

  - a backlog of --messages: one tenant owns 90 % (bulk-loaded into the backlog lane before
    the workers start), 50 small tenants share 10 % (arriving over the first 70 % of the big
    drain, as in scripts/bench_tenants.py);
  - --share of the messages also addressed to one or two of three capped domains (cap
    --cap/s each, as in scripts/bench_routes.py);
  - drained at a set global rate (--rate);
  - the primary relay stopped once --kill-at of the mail is delivered; the route's fallback
    (DRAIN_RELAY_FALLBACK) takes over;
  - `drain backlog --by tenant`, `drain status` and `drain route list` captured during the run.

Then the same run with every message in one tenant ("without tenants") for the throughput
ratio. Reports each small tenant's p99 from enqueue to delivery (the message's last
recipient at the sink), throughput, sends per capped domain per second at the sink against
cap + burst, the time from the kill to the first delivery at the fallback, lost and doubled.

    scripts/bench --only tenants --messages 1000000 --rate 700 --out benchmarks/issue15-1m.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import string
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from drain.demo.seeding import synthetic
from drain.flow import ratelimit
from drain.message import Envelope
from drain.settings import Settings
from drain.store import keys
from drain.store.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import redis_server, wait_done
from bench_routes import CAPPED, drain_cmd, most_in_a_second, recipients, stop, workers
from bench_tenants import SMALL_TENANTS, feed_small, small_latency, small_of
from replay_relay import ThreadedRelay

BIG = "big.example.com"
COLUMNS = "130"  # wide enough for the status and backlog tables in a captured file


class Tally:
    """What the two sinks took: per recipient, per message (the last recipient's time), per
    capped domain (send times), per relay."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.taken: Counter[str] = Counter()
        self.done_at: dict[int, float] = {}
        self.capped: dict[str, list[float]] = {d: [] for d in CAPPED}
        self.relay_sends: Counter[str] = Counter()
        self.first_at: dict[str, float] = {}

    def recorder(self, relay: str) -> Any:
        def record(recipients: list[str], at: float) -> None:
            with self.lock:
                self.relay_sends[relay] += 1
                self.first_at.setdefault(relay, at)
                for rcpt in recipients:
                    local, _at, domain = rcpt.partition("@")
                    self.taken[rcpt] += 1
                    seq = int(local.lstrip(string.ascii_letters))
                    self.done_at[seq] = max(self.done_at.get(seq, 0.0), at)
                    if domain in self.capped:
                        self.capped[domain].append(at)
        return record


def capture(url: str, env: dict[str, str], label: str, *commands: tuple[str, ...]) -> str:
    out = [f"--- {label} ({time.strftime('%H:%M:%S', time.gmtime())} UTC)"]
    for args in commands:
        out.append(f"$ drain {' '.join(args)}\n" + drain_cmd(url, *args, **env).rstrip())
    return "\n".join(out)


def watch(client: redis.Redis, url: str, total: int, kill_at: float, primary: ThreadedRelay, env: dict[str, str],
          marks: dict[str, Any], done: threading.Event) -> None:
    """Kill the primary relay at `kill_at` of the mail delivered; capture the commands'
    output at 25 % (before), 3 s after the kill and at 75 %. The captures run in a thread of
    their own: a slow `drain` command must not delay the kill past its mark."""
    backlog, status, routes = ("backlog", "--by", "tenant", "--top", "12"), ("status",), ("route", "list")
    marks_todo = [(0.25, "25 % delivered", (backlog, status)), (0.75, "75 % delivered", (backlog, status, routes))]
    killed = threading.Event()

    def captures() -> None:
        todo = list(marks_todo)
        while todo and not done.wait(0.2):
            delivered = int(client.hget(keys.BOOKS, "delivered") or 0)
            if killed.is_set() and "after_kill" not in marks:
                marks["after_kill"] = True
                time.sleep(3.0)
                marks["captures"].append(capture(url, env, f"3 s after the primary relay was stopped (at "
                                                 f"{marks['delivered_at_kill']:,} delivered)", status, routes, backlog))
            at, label, commands = todo[0]
            if delivered >= at * total:
                todo.pop(0)
                marks["captures"].append(capture(url, env, f"{label}: {delivered:,} of {total:,}", *commands))

    capturer = threading.Thread(target=captures, daemon=True)
    capturer.start()
    while not done.wait(0.05):
        delivered = int(client.hget(keys.BOOKS, "delivered") or 0)
        if delivered >= kill_at * total:
            marks["killed_at"] = time.time()
            marks["delivered_at_kill"] = delivered
            primary.stop()
            killed.set()
            break
    capturer.join()


def one_run(client: redis.Redis, total: int, rate: float, cap: float, share: float, kill_at: float,
            processes: int, size: int, tenants_on: bool, timeout_s: float) -> dict[str, Any]:
    client.flushdb()
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    big = int(total * 0.9)
    body = synthetic(0, size=size)
    sent: dict[int, float] = {}
    lock = threading.Lock()
    tally = Tally()
    marks: dict[str, Any] = {"captures": []}

    def items(first: int, count: int, tenant_of: Any) -> Any:
        for seq in range(first, first + count):
            yield body, Envelope(f"bench@{tenant_of(seq)}", recipients(seq, share)), None

    primary = ThreadedRelay(tally.recorder("primary")).start()
    with ThreadedRelay(tally.recorder("fallback")) as fallback:
        settings = Settings(redis_url=url, relay=primary.url)
        store = Store(client, settings)
        ratelimit.pause(client)
        loading = time.monotonic()
        store.enqueue_many(items(0, big, lambda _s: BIG), lane="backlog",
                           tenants=((BIG if tenants_on else "all") for _ in range(big)))
        load_s = time.monotonic() - loading
        ratelimit.set_global(client, rate)
        for domain in CAPPED:
            ratelimit.set_domain(client, domain, cap)
        ratelimit.resume(client)
        env = {"DRAIN_RELAY": primary.url, "DRAIN_RELAY_FALLBACK": fallback.url, "COLUMNS": COLUMNS}
        proc = workers(url, primary.url, processes, DRAIN_RELAY_FALLBACK=fallback.url)
        done = threading.Event()
        watcher = threading.Thread(target=watch, args=(client, url, total, kill_at, primary, env, marks, done),
                                   daemon=True)
        watcher.start()
        loads = [os.getloadavg()[0]]
        try:
            feed_small(store, big, total, rate, lambda first, count: items(first, count, small_of),
                       small_of if tenants_on else (lambda _s: "all"), sent, lock)
            loads.append(os.getloadavg()[0])
            wait_done(client, total, timeout_s)
            loads.append(os.getloadavg()[0])
        finally:
            done.set()
            watcher.join(timeout=60)
            stop(proc)
            if "killed_at" not in marks:
                primary.stop()
        books = store.books()
    return summary(tally, sent, marks, total, big, share, settings, cap) | {
        "tenants": tenants_on, "rate_set_per_s": rate, "processes": processes, "body_bytes": len(body),
        "backlog_load_s": round(load_s, 1), "load_average": [round(x, 1) for x in loads],
        "books": {"accepted": books.accepted, "delivered": books.delivered, "deferred": books.deferred,
                  "bounced": books.bounced, "queued": books.queued, "balanced": books.balanced}}


def summary(tally: Tally, sent: dict[int, float], marks: dict[str, Any], total: int, big: int, share: float,
            settings: Settings, cap: float) -> dict[str, Any]:
    wanted = {seq: recipients(seq, share) for seq in range(total)}
    missing = sum(1 for rcpts in wanted.values() for r in rcpts if r not in tally.taken)
    complete = [tally.done_at[s] for s, rcpts in wanted.items() if all(r in tally.taken for r in rcpts)]
    first_at = min(tally.first_at.values())
    seconds = max(complete) - first_at
    limit = cap + max(1, int(cap * settings.burst_s))
    per_domain = {}
    for domain, times in tally.capped.items():
        per_second = Counter(int(t) for t in times)
        per_domain[domain] = {"sends": len(times), "most_in_any_second": most_in_a_second(times),
                              "seconds_over": sum(1 for n in per_second.values() if n > limit)}
    killed_at = marks.get("killed_at")
    fallback_first = tally.first_at.get("fallback")
    return {
        "messages": total, "big": big, "small": total - big, "small_tenants": SMALL_TENANTS,
        "several_domains": sum(1 for r in wanted.values() if len(r) > 1),
        "recipients_wanted": sum(len(r) for r in wanted.values()),
        "delivered_messages": len(complete), "lost_recipients": missing,
        "duplicates": sum(n - 1 for n in tally.taken.values()),
        "seconds": round(seconds, 1), "throughput_per_s": round(len(complete) / seconds, 1),
        **small_latency(sent, tally.done_at),
        "big_done_at_s": round(max(tally.done_at[s] for s in range(big) if s in tally.done_at) - first_at, 1),
        "cap_per_s": cap, "cap_plus_burst": limit, "per_capped_domain": per_domain,
        "cap_violations": sum(d["seconds_over"] for d in per_domain.values()),
        "window_violations": sum(1 for d in per_domain.values() if d["most_in_any_second"] > limit),
        "relay_sends": dict(tally.relay_sends), "breaker_cooldown_s": settings.breaker_cooldown_s,
        "delivered_at_kill": marks.get("delivered_at_kill"),
        "first_fallback_after_kill_s": round(fallback_first - killed_at, 3) if killed_at and fallback_first else None,
        "captures": marks["captures"],
    }


def markdown(command: str, machine: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [f"`{command}`", "", f"Machine: {machine['cpus']} CPUs, Python {machine['python']}; load average at the "
             f"start {machine['load_average_start']}, at the end {machine.get('load_average_end')}", "",
             "| run | delivered / lost / doubled | throughput | small tenants' p99 (median / worst) | p50 | "
             "cap violations (s over cap+burst) | most in any 1 s per capped domain (cap+burst) | "
             "kill → first fallback delivery (cool-down) | primary / fallback sends | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        most = ", ".join(str(d["most_in_any_second"]) for d in r["per_capped_domain"].values())
        run = "with" if r["tenants"] else "without"
        lines.append(
            f"| {run} tenants | {r['delivered_messages']:,} / {r['lost_recipients']} / {r['duplicates']} | "
            f"{r['throughput_per_s']} msg/s (set {r['rate_set_per_s']:g}) | "
            f"{r['small_p99_s_median']} s / {r['small_p99_s_worst']} s | {r['small_p50_s']} s | "
            f"{r['cap_violations']} | {most} ({r['cap_plus_burst']:g}) | "
            f"{r['first_fallback_after_kill_s']} s ({r['breaker_cooldown_s']:g} s) | "
            f"{r['relay_sends'].get('primary', 0):,} / {r['relay_sends'].get('fallback', 0):,} | "
            f"{', '.join(str(x) for x in r['load_average'])} |")
    by = {r["tenants"]: r for r in rows}
    if True in by and False in by:
        lines.append(f"\nThroughput with tenants / without: "
                     f"{by[True]['throughput_per_s'] / by[False]['throughput_per_s']:.4f}x")
    for r in rows:
        lines.append(f"\n## Captures, {'with' if r['tenants'] else 'without'} tenants\n\n```")
        lines.extend(r["captures"])
        lines.append("```")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench --only tenants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=700.0, help="global rate (msg/s)")
    parser.add_argument("--cap", type=float, default=None, help="cap of each capped domain (default rate / 6)")
    parser.add_argument("--share", type=float, default=0.30, help="share of messages to several domains")
    parser.add_argument("--kill-at", type=float, default=0.5, help="share delivered when the primary relay stops")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--size", type=int, default=1024, help="message size in bytes")
    parser.add_argument("--runs", choices=("both", "with", "without"), default="both",
                        help="with tenants, without (every message in one tenant), or both")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for the drain")
    parser.add_argument("--out", type=Path, help="JSON here, Markdown beside it (.md)")
    args = parser.parse_args(argv)
    if not 0 < args.kill_at < 1 or args.messages < 2 * SMALL_TENANTS * 10 or args.rate <= 0:
        parser.error("--kill-at must be between 0 and 1, --messages at least 1000, --rate above 0")
    cap = args.cap or round(args.rate / 6, 1)
    timeout = args.timeout or 3 * args.messages / args.rate + 120
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
               "load_average_start": round(os.getloadavg()[0], 1)}
    command = "scripts/bench --only tenants " + " ".join(argv)
    rows = []
    with redis_server() as client:
        for on in {"both": (True, False), "with": (True,), "without": (False,)}[args.runs]:
            rows.append(one_run(client, args.messages, args.rate, cap, args.share, args.kill_at, args.processes,
                                args.size, on, timeout))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "captures"}), file=sys.stderr, flush=True)
            write(args.out, command, machine, rows)  # after each pass: a long second pass may not finish
    print(write(args.out, command, machine, rows))


def write(out: Path | None, command: str, machine: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    machine["load_average_end"] = round(os.getloadavg()[0], 1)
    text = markdown(command, machine, rows)
    if out:
        out.write_text(json.dumps({"command": command, "machine": machine, "rows": rows}, indent=2) + "\n")
        out.with_suffix(".md").write_text(text + "\n")
    return text
