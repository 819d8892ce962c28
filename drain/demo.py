"""`drain demo`: the main job end to end on the embedded default.

It starts a private embedded Redis (DRAIN_HOME/demo, wiped first) and a local SMTP sink,
seeds a backlog with a share of malformed mail, runs `drain worker` processes against
them at a set rate with a progress bar, and ends with a report whose books must balance.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from typing import cast

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from drain import embedded, ratelimit
from drain.api import Client
from drain.dispatch import ensure_tokens
from drain.seeding import backlog
from drain.settings import Settings
from drain.sink import Sink

# How long the demo waits after the last message before calling the drain stuck.
STALL_LIMIT_S = 60.0


def run_demo(settings: Settings, messages: int, rate: float | None, workers: int, malformed: float,
             console: Console) -> bool:
    home = (settings.home / "demo").resolve()
    embedded.stop(home)
    shutil.rmtree(home, ignore_errors=True)
    url = embedded.ensure_running(home)
    demo_settings = settings.with_(redis_url=url, home=home)
    client = Client.connect(demo_settings)
    with Sink(keep=False) as sink:
        console.print(f"[bold]drain demo[/]: embedded Redis at {url}, SMTP sink at {sink.url}")
        ratelimit.pause(client.redis)  # seed first, then let the workers go
        started = time.monotonic()
        accepted = client.enqueue_many(backlog(messages, malformed_share=malformed))
        console.print(f"queued {len(accepted.ids):,} messages in {time.monotonic() - started:.2f}s "
                      f"(about {malformed:.0%} malformed); rate {ratelimit.format_rate(rate)}, {workers} workers")
        ratelimit.set_global(client.redis, rate)
        env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=sink.url, DRAIN_HOME=str(home))
        proc = subprocess.Popen(
            [sys.executable, "-m", "drain", "worker", "--processes", str(workers), "--log-level", "WARNING"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        ratelimit.resume(client.redis)
        ensure_tokens(client.redis, demo_settings)
        try:
            ok, started = _watch(client, proc, len(accepted.ids), console)
            elapsed = time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        received = sink.accepted
    st = client.status()
    reasons = _quarantine_reasons(client)
    client.redis.close()
    embedded.stop(home)
    _report(console, st.books.as_dict(), st.books.balanced, reasons, elapsed, rate, received)
    return ok and st.books.balanced and received == st.books.delivered


def _watch(client: Client, proc: subprocess.Popen[str], total: int, console: Console) -> tuple[bool, float]:
    """Show progress until the queue is empty; returns (finished, when the first message was done)."""
    columns = (TextColumn("[bold]draining"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    last_change, last_done = time.monotonic(), -1
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("drain", total=total, info="")
        started = time.monotonic()
        first: float | None = None
        while True:
            books = client.store.books()
            done = books.delivered + books.bounced + books.quarantined + books.deleted
            if done and first is None:
                first = time.monotonic()
            rate = done / max(time.monotonic() - (first or started), 1e-6)
            progress.update(task, completed=done,
                            info=f"{rate:,.0f} msg/s  delivered {books.delivered:,}  quarantined {books.quarantined:,}"
                                 f"  bounced {books.bounced:,}")
            if books.queued == 0:
                return True, first or started
            if done != last_done:
                last_change, last_done = time.monotonic(), done
            if proc.poll() is not None:
                console.print(f"[red]workers exited early[/]: {(proc.stderr.read() if proc.stderr else '')[-500:]}")
                return False, first or started
            if time.monotonic() - last_change > STALL_LIMIT_S:
                console.print("[red]no progress for a minute; stopping[/]")
                return False, first or started
            time.sleep(0.2)


def _quarantine_reasons(client: Client) -> dict[str, int]:
    import json

    from drain import keys

    counts: dict[str, int] = {}
    ids = cast(list[bytes], client.redis.zrange(keys.QUARANTINE, 0, -1))
    for msg_id in ids:
        why = client.redis.hget(keys.message(msg_id.decode()), "why")
        for finding in json.loads(why or b"[]"):
            counts[finding["code"]] = counts.get(finding["code"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _report(console: Console, books: dict[str, int], balanced: bool, reasons: dict[str, int], elapsed: float,
            rate: float | None, received: int) -> None:
    table = Table(title="drain demo: final report", show_header=False)
    for key in ("accepted", "delivered", "quarantined", "bounced", "deferred", "ready", "in_flight", "deleted"):
        table.add_row(key.replace("_", " "), f"{books[key]:,}")
    table.add_row("books balance", "[green]yes[/]" if balanced else "[red]NO[/]")
    table.add_row("received by the sink", f"{received:,}")
    done = books["delivered"] + books["quarantined"] + books["bounced"]
    table.add_row("drain time", f"{elapsed:.1f} s (first message done to last)")
    table.add_row("achieved rate", f"{done / max(elapsed, 1e-6):,.0f} msg/s (set: {ratelimit.format_rate(rate)})")
    console.print(table)
    if reasons:
        qt = Table(title="quarantined by reason")
        qt.add_column("reason")
        qt.add_column("messages", justify="right")
        for code, count in reasons.items():
            qt.add_row(code, f"{count:,}")
        console.print(qt)
