"""SMTP ingress in scripts/bench (`--ingress`): `drain smtpd --processes N` beside Postfix's
smtpd, in one run, round after round.

Per round, in an order that rotates from round to round: for each process count, a fresh
`drain smtpd --processes N` on the bench's redis-server gets Postfix's `smtp-source -s
SESSIONS -l SIZE -N` (a connection per message, each recipient unique) and then the bench's
smtplib clients (one process and one connection each, no pipelining); then a throwaway
Postfix instance's smtpd (its queue, held) gets the same clients. A drain figure counts only
when every recipient that got a 250 is found in Redis exactly once; Postfix's only when its
hold queue holds every message. Peak RSS of the servers' processes is sampled meanwhile.

The summary gives each row's median over the rounds, drain/Postfix from those medians and
the range of the ratios taken within each round.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import smtplib
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import bench_postfix
import redis
from peak_rss import PeakRss, brief

from drain.demo.seeding import synthetic
from drain.demo.sink import free_port
from drain.worker.delivery import wire_form

RECIPIENT = "user@example.com"


def smtp_client(port: int, first: int, count: int, size: int, ready: Any, go: Any, done: Any) -> None:
    """One SMTP connection (smtplib, no pipelining) sending `count` messages, after the go signal."""
    raws = [wire_form(synthetic(i, size=size)) for i in range(first, first + count)]
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo()
        ready.put(1)
        go.wait()
        for i, raw in enumerate(raws, first):
            smtp.sendmail("billing@sender.example.com", [f"user{i}@example.com"], raw)
    done.put(count)


def smtp_load(port: int, messages: int, clients: int, size: int) -> float:
    """Seconds for `clients` processes, one connection each, to have all `messages` accepted."""
    ctx = multiprocessing.get_context("fork")
    ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    share = [messages // clients + (1 if n < messages % clients else 0) for n in range(clients)]
    firsts = [sum(share[:n]) for n in range(clients)]
    procs = [ctx.Process(target=smtp_client, args=(port, firsts[n], share[n], size, ready, go, done))
             for n in range(clients)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=120)
    started_at = time.perf_counter()
    go.set()
    sent = sum(done.get(timeout=3600) for _ in procs)
    seconds = time.perf_counter() - started_at
    for proc in procs:
        proc.join(timeout=60)
        if proc.exitcode != 0:
            raise RuntimeError(f"an SMTP client process failed (exit {proc.exitcode})")
    assert sent == messages
    return seconds


def _check_stored(client: redis.Redis, expected: list[str], who: str) -> int:
    """Every recipient that got a 250 is in Redis exactly once; the count found."""
    found = sorted(bench_postfix.stored_recipients(client))
    if found != sorted(expected):
        raise RuntimeError(f"{len(expected)} messages got 250 from {who}; Redis holds {len(found)} recipients, "
                           f"{len(set(expected) - set(found))} missing, {len(found) - len(set(found))} twice")
    return len(found)


@contextmanager
def drain_smtpd(client: redis.Redis, processes: int) -> Iterator[tuple[int, PeakRss]]:
    """`drain smtpd --processes N` on this Redis, listening; its processes' peak RSS sampled."""
    from bench import listening

    redis_url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    port = free_port()
    env = dict(os.environ, DRAIN_REDIS_URL=redis_url, DRAIN_SMTPD_SMTPUTF8="true", DRAIN_SMTPD_8BITMIME="true",
               DRAIN_SMTPD_MAX_SESSIONS="200")
    cmd = [sys.executable, "-m", "drain", "smtpd", "--listen", f"127.0.0.1:{port}", "--log-level", "WARNING",
           "--processes", str(processes)]
    with listening(cmd, port, env, "drain smtpd") as proc, PeakRss(lambda: [proc.pid]) as rss:
        yield port, rss


def _row(name: str, client_kind: str, sessions: int, messages: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"part": "ingress", "name": name, "client": client_kind, "sessions": sessions, "messages": messages,
            "seconds": round(seconds, 2), "msg_per_s": round(messages / seconds, 1), **extra}


def drain_rows(client: redis.Redis, processes: int, messages: int, sessions: int, size: int,
               clients: list[int]) -> list[dict[str, Any]]:
    rows = []
    name = f"drain smtpd --processes {processes} -> Redis"
    source = bench_postfix.tool("smtp-source") is not None
    for kind in (["smtp-source"] if source else []) + [f"smtplib {n}" for n in clients]:
        client.flushdb()
        with drain_smtpd(client, processes) as (port, rss):
            if kind == "smtp-source":
                seconds = bench_postfix.smtp_source(port, messages, sessions, length=size, recipient=RECIPIENT)
                # -N makes recipient n (from 1) "<n>user@example.com".
                expected = [f"{n}{RECIPIENT}" for n in range(1, messages + 1)]
                n = sessions
            else:
                n = int(kind.split()[1])
                seconds = smtp_load(port, messages, n, size)
                expected = [f"user{i}@example.com" for i in range(messages)]
        checked = _check_stored(client, expected, "drain smtpd")
        rows.append(_row(name, kind.split()[0], n, messages, seconds, processes=processes, checked_in_redis=checked,
                         peak_rss=rss.summary()))
    return rows


def postfix_rows(postfix: bench_postfix.PostfixInstance, messages: int, sessions: int, size: int,
                 clients: list[int]) -> list[dict[str, Any]]:
    rows = []
    name = f"Postfix {bench_postfix.version()} smtpd -> its queue"
    for kind in ["smtp-source"] + [f"smtplib {n}" for n in clients]:
        with PeakRss(postfix.master_pids) as rss:
            if kind == "smtp-source":
                seconds, n = postfix.inject(messages, sessions, length=size, recipient=RECIPIENT), sessions
            else:
                n = int(kind.split()[1])
                seconds = smtp_load(postfix.smtpd_port, messages, n, size)
        held = bench_postfix.all_held(postfix, messages)
        rows.append(_row(name, kind.split()[0], n, messages, seconds, processes=None, held=held,
                         peak_rss=rss.summary()))
    return rows


def bench_ingress(client: redis.Redis, processes: list[int], clients: list[int], messages: int, sessions: int,
                  size: int, rounds: int) -> list[dict[str, Any]]:
    """Every row, `rounds` times; each row has its round and the load average before it."""
    why_not = bench_postfix.missing()
    rows: list[dict[str, Any]] = []
    steps: list[int | None] = [*processes, *([None] if why_not is None else [])]
    sink: Any = bench_postfix.CountingSink() if why_not is None else nullcontext()
    with sink as counting:
        postfix = bench_postfix.PostfixInstance(counting.port) if why_not is None else None
        with postfix if postfix is not None else nullcontext():
            for round_no in range(1, rounds + 1):
                shift = (round_no - 1) % len(steps)
                for step in steps[shift:] + steps[:shift]:
                    load = round(os.getloadavg()[0], 1)
                    if step is None:
                        assert postfix is not None
                        made = postfix_rows(postfix, messages, sessions, size, clients)
                    else:
                        made = drain_rows(client, step, messages, sessions, size, clients)
                    for row in made:
                        row.update(round=round_no, load_average=load)
                        rows.append(row)
                        print(json.dumps(row), file=sys.stderr, flush=True)
    if why_not is not None:
        rows.append({"part": "ingress", "name": "Postfix smtpd", "missing": why_not})
    return rows


def _key(row: dict[str, Any]) -> tuple[str, int]:
    return row["client"], row["sessions"]


def ingress_markdown(rows: list[dict[str, Any]]) -> str:
    """Medians over the rounds, drain/Postfix from the medians and per round."""
    rows = [r for r in rows if r.get("part") == "ingress"]
    measured = [r for r in rows if "missing" not in r]
    rounds = max((r["round"] for r in measured), default=0)
    loads = [r["load_average"] for r in measured]
    lines = [f"Accepted over SMTP, {rounds} round(s), load average {min(loads, default=0)}-{max(loads, default=0)} "
             "(a message counts once its 250 came; drain's are checked in Redis, Postfix's in its hold queue). "
             "msg/s: median of the rounds [each round]; drain/Postfix: ratio of the medians [range of the "
             "ratios within a round]; peak RSS: largest process's RSS (its name) / PSS sum at one moment, MB, "
             "in N processes, highest of the rounds:", "",
             "| server | client | sessions | messages | msg/s | drain/Postfix | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in measured:
        groups.setdefault((r["name"], *_key(r)), []).append(r)
    postfix = {(k[1], k[2]): g for k, g in groups.items() if k[0].startswith("Postfix")}
    for (name, kind, n), group in groups.items():
        rates = [r["msg_per_s"] for r in group]
        median = statistics.median(rates)
        ratio = ""
        if not name.startswith("Postfix") and (kind, n) in postfix:
            theirs = {r["round"]: r["msg_per_s"] for r in postfix[(kind, n)]}
            within = [r["msg_per_s"] / theirs[r["round"]] for r in group if r["round"] in theirs]
            ratio = (f"{median / statistics.median(theirs.values()):.2f}x "
                     f"[{min(within):.2f}-{max(within):.2f}]")
        rss = max((r["peak_rss"] for r in group), key=lambda s: s.get("sum_mb", 0))
        lines.append(f"| {name} | {kind} | {n} | {group[0]['messages']:,} | {median:,.0f} "
                     f"[{', '.join(f'{x:,.0f}' for x in rates)}] | {ratio} | {brief(rss)} |")
    for r in rows:
        if "missing" in r:
            lines.append(f"| Postfix smtpd | | | | not measured: {r['missing'].replace('|', chr(92) + '|')} | | |")
    return "\n".join(lines)
