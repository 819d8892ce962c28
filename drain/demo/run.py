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
from typing import Any, cast

from rich.console import Console
from rich.table import Table

from drain.cli.progress import watch
from drain.demo.seeding import backlog
from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import embedded
from drain.store.record import FINDINGS, fetch
from drain.worker.dispatch import ensure_tokens

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
            watched = watch(client.store, proc, console, stall_limit_s=STALL_LIMIT_S)
            elapsed = time.monotonic() - watched.first_done_at
            ok = watched.finished
            if not ok:
                detail = (proc.stderr.read() if proc.stderr and proc.poll() is not None else "")[-500:]
                console.print(f"[red]stopped: {watched.reason}[/] {detail}")
        finally:
            stop(proc, signal.SIGTERM, 15)
        received = sink.accepted
    st = client.status()
    reasons = _quarantine_reasons(client)
    client.redis.close()
    embedded.stop(home)
    _report(console, st.books.as_dict(), st.books.balanced, reasons, elapsed, rate, received)
    return ok and st.books.balanced and received == st.books.delivered


def _quarantine_reasons(client: Client) -> dict[str, int]:
    from drain.store import keys

    counts: dict[str, int] = {}
    ids = cast(list[bytes], client.redis.zrange(keys.QUARANTINE, 0, -1))
    for found in fetch(client.redis, [i.decode() for i in ids], (FINDINGS,)):
        for finding in found.findings if found else []:
            code = str(finding.get("code", ""))
            counts[code] = counts.get(code, 0) + 1
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


def stop(proc: subprocess.Popen[Any], sig: int, timeout_s: float) -> None:
    """Ask a process to stop with `sig`; kill it if it has not within timeout_s."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
