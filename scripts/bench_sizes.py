"""The size series of scripts/bench: drain and Postfix draining the same held queue of 2 KB,
20 KB and 100 KB messages into one counting sink, in the same run: scripts/bench_sink.py's asyncio
sink by default (~0.9 µs of CPU per KB), or Postfix's smtp-sink (--size-sink smtp-sink: ~4.5 µs
per KB, which at 100 KB costs the shared cores nearly what the drain worker does). The sink's
own CPU per message is reported for every row.

- 2 KB: plain text (drain.seeding.synthetic), as the rest of the bench;
- 20 KB: a transactional HTML mail, multipart/alternative (text and HTML);
- 100 KB: a short text with a base64 attachment (multipart/mixed).

Per size: Postfix gets the message from a file with smtp-source (20 sessions, unique
recipients, held on arrival), then `postsuper -H ALL; postqueue -f` is timed until the sink
has counted every message; drain gets the same count enqueued in batches (paused), `drain
worker --processes N` is started and waits idle (as Postfix's daemons run before its
release), then `drain resume` is timed until its books show every message done, and the
sink's count is checked; the workers' start-up is reported on its own (start_s).
Reports msg/s and MB/s (MB = 10^6 bytes of message) for both.
"""

from __future__ import annotations

import base64
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_postfix
import bench_sink
import redis
from peak_rss import PeakRss, brief

from drain.api import Client
from drain.demo.run import stop
from drain.demo.seeding import DOMAINS, synthetic
from drain.flow import ratelimit
from drain.ops import control
from drain.settings import Settings
from drain.store import keys
from drain.worker.dispatch import rq_queue

SIZES = (2048, 20480, 102400)
_HEAD = ("From: Billing <billing@sender.example.com>\n"
         "To: Customer {i} <user{i}@{domain}>\n"
         "Subject: Your statement no. {i}\n"
         "Date: Mon, 23 Nov 2026 10:00:00 +0000\n"
         "Message-ID: <sized-{i}@sender.example.com>\n"
         "MIME-Version: 1.0\n")


def _html(i: int, size: int) -> bytes:
    """multipart/alternative: a text part and an HTML part, about `size` bytes in all."""
    text = (f"Dear customer {i},\n\nyour statement is ready. Thank you for your business.\n\n" * 4).encode()
    row = (f'<tr><td class="item">Item {{n}} for customer {i}</td><td class="qty">1</td>'
           '<td class="price">12.50 EUR</td></tr>\n')
    head = (_HEAD.format(i=i, domain=DOMAINS[i % len(DOMAINS)])
            + 'Content-Type: multipart/alternative; boundary="=_alt"\n\n').encode()
    parts = [head, b"--=_alt\nContent-Type: text/plain; charset=us-ascii\n\n", text,
             b"\n--=_alt\nContent-Type: text/html; charset=us-ascii\n\n",
             b"<html><head><style>td{padding:4px}</style></head><body><table>\n"]
    used = sum(map(len, parts)) + 40
    n = 0
    while used < size:
        line = row.format(n=n).encode()
        parts.append(line)
        used += len(line)
        n += 1
    parts.append(b"</table></body></html>\n--=_alt--\n")
    return b"".join(parts)


def _attachment(i: int, size: int) -> bytes:
    """multipart/mixed: a short text part and a base64 attachment, about `size` bytes in all."""
    head = (_HEAD.format(i=i, domain=DOMAINS[i % len(DOMAINS)])
            + 'Content-Type: multipart/mixed; boundary="=_mix"\n\n').encode()
    text = b"--=_mix\nContent-Type: text/plain; charset=us-ascii\n\nYour statement is attached.\n\n"
    attach_head = (b'--=_mix\nContent-Type: application/pdf; name="statement.pdf"\n'
                   b'Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename="statement.pdf"\n\n')
    room = size - len(head) - len(text) - len(attach_head) - 20
    payload = random.Random(i).randbytes(room * 3 // 4 * 76 // 77)
    encoded = base64.encodebytes(payload)  # 76-character lines
    return head + text + attach_head + encoded + b"--=_mix--\n"


def message(i: int, size: int) -> bytes:
    """Message number `i` of the size class `size` (2 KB text, 20 KB HTML, 100 KB with attachment)."""
    if size <= 4096:
        return synthetic(i, size=size)
    if size <= 40960:
        return _html(i, size)
    return _attachment(i, size)


def label(size: int) -> str:
    kind = "text" if size <= 4096 else "HTML" if size <= 40960 else "base64 attachment"
    return f"{size // 1024} KB {kind}"


def _wait_ready(client: redis.Redis, processes: int, proc: subprocess.Popen[bytes]) -> None:
    """Until `processes` RQ workers are idle and no batch job waits (the jobs queued while
    delivery was paused have run and found it paused)."""
    deadline = time.perf_counter() + 120
    queue = rq_queue(client)
    while True:
        idle = sum(client.hget(w, "state") == b"idle" for w in client.smembers("rq:workers"))
        if idle >= processes and queue.count == 0:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"drain worker exited with {proc.returncode} before it was ready")
        if time.perf_counter() > deadline:
            raise RuntimeError("drain worker was not ready in 120 s")
        time.sleep(0.05)


def drain_run(client: redis.Redis, sink: Any, raws: list[bytes], processes: int) -> dict[str, Any]:
    """Enqueue `raws` while delivery is paused and start `drain worker --processes N`; once its
    workers are idle (Postfix's daemons, too, are running before its release), time `drain
    resume` until the books show every message done. The start-up is reported on its own."""
    client.flushdb()
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    settings = Settings(redis_url=url, relay=sink.url, actor="bench")
    api = Client(client, settings)
    count = len(raws)
    ratelimit.pause(client)
    started = time.perf_counter()
    api.enqueue_many(raws)
    enqueue_s = time.perf_counter() - started
    env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=sink.url)
    counting = hasattr(sink, "mark")
    boot = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--processes", str(processes),
                             "--log-level", "WARNING"], env=env, stdout=subprocess.DEVNULL)
    rss = PeakRss(lambda: [proc.pid]).__enter__()
    try:
        _wait_ready(client, processes, proc)
        start_s = time.perf_counter() - boot
        if counting:
            sink.mark()
            sink_cpu = sink.cpu_s()
        started = time.perf_counter()
        control.resume(api.store, reason="bench release")
        while True:
            done = sum(int(v or 0) for v in client.hmget(keys.BOOKS, ["delivered", "quarantined", "bounced"]))
            if done >= count:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"drain worker exited with {proc.returncode} after {done} of {count}")
            if time.perf_counter() - started > 3600:
                raise RuntimeError(f"drain did {done} of {count} in an hour")
            time.sleep(0.01)
        seconds = time.perf_counter() - started
    finally:
        rss.__exit__(None, None, None)
        stop(proc, signal.SIGINT, 120)
    books = api.store.books()
    if books.delivered != count:
        raise RuntimeError(f"drain delivered {books.delivered} of {count} (quarantined {books.quarantined}, "
                           f"bounced {books.bounced}): the series needs messages that validate")
    row: dict[str, Any] = {"seconds": round(seconds, 2), "msg_per_s": round(count / seconds, 1),
                           "start_s": round(start_s, 2), "enqueue_per_s": round(count / enqueue_s),
                           "delivered": books.delivered, "peak_rss": rss.summary()}
    if counting:
        sink.wait_for(count, time.perf_counter(), timeout_s=30)
        row["sink_counted"] = sink.since()
        row["sink_cpu_us_per_msg"] = round((sink.cpu_s() - sink_cpu) / count * 1e6, 1)
    return row


def postfix_run(postfix: bench_postfix.PostfixInstance, sink: Any, sample: bytes, tmp: Path, count: int,
                sessions: int) -> dict[str, Any]:
    """Inject `count` copies of `sample` (held), then time their release into the sink."""
    path = tmp / "sample.eml"
    path.write_bytes(sample)
    inject_s = postfix.inject(count, sessions, path)
    held = postfix.held()
    if held != count:
        raise RuntimeError(f"Postfix holds {held} of {count} injected messages")
    sink_cpu = sink.cpu_s()
    with PeakRss(postfix.master_pids) as rss:
        seconds = postfix.release(sink, count)
    sink_us = round((sink.cpu_s() - sink_cpu) / count * 1e6, 1)
    return {"sink_cpu_us_per_msg": sink_us, "seconds": round(seconds, 2), "msg_per_s": round(count / seconds, 1),
            "mb_per_s": round(count * len(sample) / seconds / 1e6, 2), "inject_seconds": round(inject_s, 2),
            "inject_per_s": round(count / inject_s, 1), "sink_counted": sink.since(), "peak_rss": rss.summary()}


def bench_sizes(report: Any, client: redis.Redis, count: int, processes: list[int], sizes: list[int],
                sessions: int = 20, rounds: int = 1, sink_kind: str = "asyncio") -> None:
    """Per size and round: Postfix (when it can run here) and drain with each process count, one sink."""
    why_not = bench_postfix.missing()
    use_smtp_sink = sink_kind == "smtp-sink" and bench_postfix.tool("smtp-sink") is not None
    sink_cm = bench_postfix.CountingSink() if use_smtp_sink else bench_sink.CountingRelay()
    with sink_cm as sink, tempfile.TemporaryDirectory() as tmp:
        postfix = bench_postfix.PostfixInstance(sink.port) if why_not is None else None
        try:
            if postfix is not None:
                postfix.__enter__()
            for size in sizes:
                raws = [message(i, size) for i in range(count)]
                avg = sum(map(len, raws)) / count
                for round_no in range(1, rounds + 1):
                    common = {"part": "sizes", "sink": sink_cm.name, "size": size, "label": label(size),
                              "messages": count, "avg_message_bytes": round(avg), "round": round_no,
                              "load_average": round(os.getloadavg()[0], 1)}
                    if postfix is not None:
                        report.add(name=f"Postfix {bench_postfix.version()}", **common,
                                   **postfix_run(postfix, sink, raws[0], Path(tmp), count, sessions))
                    else:
                        report.add(name="Postfix", **common, missing=why_not)
                    for n in processes:
                        row = drain_run(client, sink, raws, n)
                        report.add(name="drain", processes=n, **common, **row,
                                   mb_per_s=round(count * avg / row["seconds"] / 1e6, 2))
        finally:
            if postfix is not None:
                postfix.__exit__(None, None, None)


def sizes_markdown(rows: list[dict[str, Any]]) -> str:
    """Per size and system: the median over the rounds [each round], drain/Postfix from the
    medians [the range of the ratios within a round], and peak RSS."""
    rows = [r for r in rows if r.get("part") == "sizes"]
    if not rows:
        return ""
    loads = [r["load_average"] for r in rows]
    lines = [f"Size series (same held queue, same sink: {rows[0].get('sink', 'smtp-sink')}), "
             f"{max(r['round'] for r in rows)} round(s), load "
             f"average {min(loads)}-{max(loads)}. msg/s: median [each round]; drain/Postfix: ratio of the "
             "medians [range within a round]; peak RSS while delivering: largest process's RSS (its name) / "
             "PSS sum at one moment, MB, in N processes, highest of the rounds; sink CPU: the sink's own CPU "
             "per message, median of the rounds:", "",
             "| size | system | messages | msg/s | MB/s | drain/Postfix | peak RSS MB | enqueue msg/s "
             "| sink CPU µs/msg |",
             "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        system = r["name"] if r["name"] != "drain" else f"drain, {r['processes']} process" + (
            "es" if r["processes"] > 1 else "")
        groups.setdefault((r["size"], system), []).append(r)
    postfix = {size: {r["round"]: r["msg_per_s"] for r in g} for (size, system), g in groups.items()
               if system.startswith("Postfix") and "missing" not in g[0]}
    for (size, system), group in groups.items():
        first = group[0]
        if "missing" in first:
            lines.append(f"| {first['label']} | Postfix: not measured ({first['missing'].replace('|', chr(92) + '|')})"
                         " | | | | | | | |")
            continue
        rates = [r["msg_per_s"] for r in group]
        median = statistics.median(rates)
        ratio = ""
        if system.startswith("drain") and size in postfix:
            theirs = postfix[size]
            within = [r["msg_per_s"] / theirs[r["round"]] for r in group if r["round"] in theirs]
            ratio = f"{median / statistics.median(theirs.values()):.2f}x [{min(within):.2f}-{max(within):.2f}]"
        rss = max((r.get("peak_rss") or {} for r in group), key=lambda s: s.get("sum_mb", 0))
        enqueue = statistics.median(r["enqueue_per_s"] for r in group) if "enqueue_per_s" in first else None
        mb_per_s = statistics.median(r["mb_per_s"] for r in group)
        sink_us = [r["sink_cpu_us_per_msg"] for r in group if "sink_cpu_us_per_msg" in r]
        lines.append(f"| {first['label']} | {system} | {first['messages']:,} | {median:,.0f} "
                     f"[{', '.join(f'{x:,.0f}' for x in rates)}] | {mb_per_s:.2f} "
                     f"| {ratio} | {brief(rss)} | {f'{enqueue:,.0f}' if enqueue else ''} "
                     f"| {f'{statistics.median(sink_us):,.0f}' if sink_us else ''} |")
    injected = [r for r in rows if "inject_per_s" in r]
    if injected:
        lines += ["", "Filling Postfix's queue (not timed above): smtp-source -s 20, median msg/s " + ", ".join(
            f"{label(size)} {statistics.median(r['inject_per_s'] for r in injected if r['size'] == size):,.0f}"
            for size in dict.fromkeys(r["size"] for r in injected)) + "."]
    return "\n".join(lines)
