"""drain's benchmark: every figure measured in one run, on this machine, against its own
redis-server and SMTP sink (Postfix's smtp-sink when installed, else an aiosmtpd sink in
its own process). Prints a Markdown table and writes JSON with --out.

    scripts/bench                         # 100,000 messages through drain, 10,000 through naive RQ
    scripts/bench --messages 20000 --naive-messages 3000 --processes 1,2,4
    scripts/bench --ingress               # SMTP ingress: `drain smtpd --processes 1,2` beside Postfix's smtpd
    scripts/bench --only enqueue          # enqueue_many at 2 and 20 KB, with the cost of each step
    scripts/bench --only backlog          # `drain backlog` on a 1,000,000-message backlog
    scripts/bench --only sizes --messages 20000   # 2/20/100 KB: drain and Postfix (when installed)
    scripts/bench --only cells --messages 20000   # Redis CPU per message, 1/2/3 cells (bench_cells.py)
    scripts/bench --only trace            # events: memory per message, trace lookup among 1M, on vs off
    scripts/bench --only tenants          # issue 15 in one run: 1M, 90 % one tenant, capped domains, relay killed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from drain import validate
from drain.demo.seeding import load, synthetic, with_message_id
from drain.demo.sink import Sink, free_port
from drain.intake.api import Client
from drain.message import envelope_from_headers
from drain.observe.deferred import records
from drain.settings import Settings
from drain.store import keys
from drain.store.embedded import spawn_on_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_enqueue
import bench_ingress
import bench_postfix
import bench_sizes
import bench_trace

POLL_S = 0.05


@dataclass
class Report:
    machine: dict[str, Any]
    sink: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, **row: Any) -> None:
        self.rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)


@contextmanager
def redis_server() -> Iterator[redis.Redis]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = spawn_on_port(port, Path(tmp))
        client = redis.Redis(port=port)
        try:
            yield client
        finally:
            proc.terminate()
            proc.wait()


@contextmanager
def smtp_sink(prefer_postfix: bool) -> Iterator[tuple[str, str]]:
    port = free_port()
    binary = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None)
    if prefer_postfix and binary:
        cmd = [binary, *(["-u", "postfix"] if os.geteuid() == 0 else []), f"127.0.0.1:{port}", "1000"]
        name = "postfix smtp-sink"
    else:
        cmd = [sys.executable, __file__, "--serve-sink", str(port)]
        name = "aiosmtpd sink (separate process)"
    with listening(cmd, port, dict(os.environ), name):
        yield f"smtp://127.0.0.1:{port}", name


def serve_sink(port: int) -> None:
    with Sink(keep=False, port=port):
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


def wait_done(client: redis.Redis, total: int, timeout_s: float) -> float:
    """Seconds until delivered + quarantined + bounced reaches total."""
    started = time.monotonic()
    while True:
        done = sum(int(v or 0) for v in client.hmget(keys.BOOKS, ["delivered", "quarantined", "bounced"]))
        if done >= total:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"only {done} of {total} messages done after {timeout_s}s")
        time.sleep(POLL_S)


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def bench_drain(report: Report, client: redis.Redis, relay: str, count: int, processes: int,
                size: int) -> None:
    client.flushdb()
    settings = Settings(redis_url=f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0",
                        relay=relay)
    api = Client(client, settings)
    raws = [synthetic(i, size=size) for i in range(count)]
    before = used_memory(client)
    from drain.flow import ratelimit

    ratelimit.pause(client)  # no tokens while we fill the queue
    started = time.perf_counter()
    api.enqueue_many(raws)
    enqueue_s = time.perf_counter() - started
    per_message = (used_memory(client) - before) / count
    ratelimit.resume(client)
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=relay)
    proc = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--burst", "--processes", str(processes),
                             "--log-level", "WARNING"], env=env, stdout=subprocess.DEVNULL)
    try:
        seconds = wait_done(client, count, timeout_s=3600)
    finally:
        proc.wait(timeout=120)
    books = api.store.books()
    after = used_memory(client)
    report.add(name="drain", processes=processes, messages=count, seconds=round(seconds, 2),
               msg_per_s=round(count / seconds, 1), enqueue_per_s=round(count / enqueue_s),
               redis_bytes_per_queued_msg=round(per_message), avg_message_bytes=round(sum(map(len, raws)) / count),
               redis_overhead_per_msg=round(per_message - sum(map(len, raws)) / count),
               redis_bytes_after_drain=after, delivered=books.delivered, balanced=books.balanced)


def bench_naive(report: Report, client: redis.Redis, relay: str, count: int, processes: int, size: int) -> None:
    client.flushdb()
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    queue = Queue("naive", connection=client, serializer=JSONSerializer)
    started = time.perf_counter()
    for start in range(0, count, 1000):
        pipe = client.pipeline()
        ids = [f"n{i}" for i in range(start, min(start + 1000, count))]
        for i, msg_id in enumerate(ids, start):
            raw = synthetic(i, size=size)
            pipe.hset(keys.message(msg_id), mapping={"raw": raw, "env": envelope_from_headers(raw).to_json()})
        pipe.execute()
        queue.enqueue_many([Queue.prepare_data("workers.naive.deliver_one", args=[m], result_ttl=0) for m in ids])
    enqueue_s = time.perf_counter() - started
    env = dict(os.environ, DRAIN_RELAY=relay)
    procs = [
        subprocess.Popen([sys.executable, "-m", "rq.cli", "worker", "--burst", "-w", "rq.worker.SimpleWorker",
                          "-S", "rq.serializers.JSONSerializer", "-u", url, "-q", "naive"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(processes)
    ]
    try:
        seconds = wait_done(client, count, timeout_s=3600)
    finally:
        for proc in procs:
            proc.wait(timeout=120)
    report.add(name="naive RQ (job per message, SimpleWorker)", processes=processes, messages=count,
               seconds=round(seconds, 2), msg_per_s=round(count / seconds, 1),
               enqueue_per_s=round(count / enqueue_s))


def bench_validation(report: Report, count: int = 3000) -> None:
    """Verdicts per second on one core: synthetic text mail of 2, 5 and 10 KB, and the seeds/good mix."""
    good = [raw for _name, raw in load("good")]
    cases = {f"{size // 1024} KB text": [synthetic(i, size=size) for i in range(count)] for size in (2048, 5120, 10240)}
    cases["seeds/good mix (1-2.5 KB, MIME)"] = [with_message_id(good[i % len(good)], f"<v{i}@x>")
                                               for i in range(count)]
    for label, raws in cases.items():
        envs = [envelope_from_headers(r) for r in raws]
        runs = []
        for _ in range(5):
            validate._valid_cached.cache_clear()
            validate._strict_parse_failure.cache_clear()
            started = time.perf_counter()
            for raw, env in zip(raws, envs, strict=True):
                validate.check(raw, env)
            runs.append(count / (time.perf_counter() - started))
        report.add(name=f"validation, one core: {label}", messages=count, msg_per_s=round(statistics.median(runs)),
                   note="median of 5 runs; address caches cleared before each")


def bench_retry(report: Report, client: redis.Redis, count: int, processes: int, transient: float = 0.20,
                permanent: float = 0.01) -> None:
    """A relay that fails `transient` of attempts with 451 and `permanent` of messages with 550.

    Rounds: workers drain what is ready, then deferred mail is promoted by naming a moment
    after every backoff (time is injected, nothing waits). Checks that every message ends
    delivered or bounced, none lost, and every deferral's delay follows the policy.
    """
    import random
    import threading

    client.flushdb()
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    rng = random.Random(11)
    lock = threading.Lock()
    attempts: dict[str, int] = {}
    failures: dict[str, int] = {}
    taken: dict[str, int] = {}  # 250s given, by Message-ID
    doomed = {f"<synthetic-{i}@sender.example.com>" for i in range(count) if rng.random() < permanent}

    def relay_policy(_index: int, msg: Any) -> str | None:
        mid = msg.message_id
        with lock:
            attempts[mid] = attempts.get(mid, 0) + 1
            if mid in doomed:
                return "550 5.7.1 message refused"
            if rng.random() < transient:
                failures[mid] = failures.get(mid, 0) + 1
                return "451 4.3.0 try again later"
            taken[mid] = taken.get(mid, 0) + 1
        return None

    settings = Settings(redis_url=url)
    with Sink(keep=False, data_policy=relay_policy) as sink:
        settings = settings.with_(relay=sink.url)
        api = Client(client, settings)
        api.enqueue_many(synthetic(i) for i in range(count))
        env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=sink.url)
        started = time.perf_counter()
        rounds, bad_delays, checked = 0, 0, 0
        while True:
            rounds += 1
            subprocess.run([sys.executable, "-m", "drain", "worker", "--burst", "--processes", str(processes),
                            "--log-level", "ERROR"], env=env, check=True, stdout=subprocess.DEVNULL)
            for row in records(api.store):
                delay = row.next_attempt_at - row.history[-1]["at"]
                floor = min(settings.retry_first_s * 2 ** (row.attempts - 1), settings.retry_max_s)
                ceiling = min(floor + settings.retry_first_s * 0.2, settings.retry_max_s)
                checked += 1
                if not floor - 1 <= delay <= ceiling + 1:
                    bad_delays += 1
            if api.store.books().deferred == 0 and api.store.books().ready == 0:
                break
            api.store.promote_due(now=10**10)
        seconds = time.perf_counter() - started
    books = api.store.books()
    expected_attempts = sum(1 + failures.get(m, 0) for m in attempts)
    # Counted at the relay: a message is lost unless the relay gave it a 250 or refused it for good.
    lost = sum(1 for i in range(count) if f"<synthetic-{i}@sender.example.com>" not in taken.keys() | doomed)
    report.add(name="retry run (20% 451 per attempt, 1% 550)", processes=processes, messages=count,
               seconds=round(seconds, 1), msg_per_s=round(count / seconds, 1), rounds=rounds,
               delivered=books.delivered, bounced=books.bounced, doomed=len(doomed), queued=books.queued,
               lost=lost, duplicates=sum(n - 1 for n in taken.values()), balanced=books.balanced,
               relay_attempts=sum(attempts.values()),
               attempts_expected_by_policy=expected_attempts, transient_failures=sum(failures.values()),
               deferrals_checked=checked, deferrals_off_policy=bad_delays,
               max_attempts=max(attempts.values()) if attempts else 0)


def start_workers(url: str, relay: str, processes: int) -> subprocess.Popen[bytes]:
    """`drain worker --processes N` against this Redis and relay, quiet."""
    env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=relay)
    return subprocess.Popen([sys.executable, "-m", "drain", "worker", "--processes", str(processes),
                             "--log-level", "ERROR"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextmanager
def listening(cmd: list[str], port: int, env: dict[str, str], name: str) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, from the moment it accepts connections until it is told to stop."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"{name} did not start") from None
            time.sleep(0.05)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def bench_rate(report: Report, client: redis.Redis, backlog: int, processes: int, rate: float = 500.0,
               window_s: float = 60.0, caps: dict[str, float] | None = None, fresh_every_s: float = 0.1) -> None:
    """Rate fidelity at a set global rate across worker processes, per-domain caps (the most
    sends in any one-second window, from the relay's own clock), and the latency of fresh
    mail arriving while a backlog drains."""
    import threading

    from drain.demo.seeding import DOMAINS
    from drain.flow import ratelimit
    from drain.intake.api import Submission
    from drain.message import Envelope

    caps = caps if caps is not None else {"example.net": 50.0, "shop.example.net": 20.0}
    client.flushdb()
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    lock = threading.Lock()
    sends: dict[str, list[float]] = {}
    fresh_seen: dict[str, float] = {}

    def record(_index: int, msg: Any) -> None:
        domain = msg.recipients[0].rpartition("@")[2]
        with lock:
            sends.setdefault(domain, []).append(msg.at)
            if msg.message_id.startswith("<fresh-"):
                fresh_seen[msg.message_id] = msg.at

    with Sink(keep=False, data_policy=record) as sink:
        settings = Settings(redis_url=url, relay=sink.url)
        api = Client(client, settings)
        ratelimit.pause(client)
        started = time.perf_counter()
        body = synthetic(0)
        api.store.enqueue_many(
            ((body, Envelope("billing@sender.example.com", (f"user{i}@{DOMAINS[i % len(DOMAINS)]}",)), None)
             for i in range(backlog)), lane="backlog")
        enqueue_s = time.perf_counter() - started
        ratelimit.set_global(client, rate)
        for domain, cap in caps.items():
            ratelimit.set_domain(client, domain, cap)
        ratelimit.resume(client)
        proc = start_workers(url, sink.url, processes)
        try:
            # Warm up, then measure over the window; a producer adds fresh mail meanwhile.
            wait_until = time.time() + 5
            while time.time() < wait_until:
                time.sleep(0.1)
            fresh_sent: dict[str, float] = {}
            done0 = int(client.hget(keys.BOOKS, "delivered") or 0)
            t0 = time.time()
            n = 0
            while time.time() - t0 < window_s:
                mid = f"<fresh-{n}@drain.example.com>"
                fresh_sent[mid] = time.time()
                api.enqueue(Submission(with_message_id(synthetic(n), mid)).message)
                n += 1
                time.sleep(fresh_every_s)
            done1 = int(client.hget(keys.BOOKS, "delivered") or 0)
            t1 = time.time()
            deadline = time.time() + 30
            while len(fresh_seen) < len(fresh_sent) and time.time() < deadline:
                time.sleep(0.1)
            missing = [m for m in fresh_sent if m not in fresh_seen]
            if missing:
                print("fresh mail not delivered:", missing[:5], api.store.books(), file=sys.stderr)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    achieved = (done1 - done0) / (t1 - t0)
    latencies = sorted(fresh_seen[m] - t for m, t in fresh_sent.items() if m in fresh_seen)
    worst = {}
    for domain, cap in caps.items():
        times = sorted(t for t in sends.get(domain, []) if t0 <= t <= t1)
        burst = max(1, int(cap * settings.burst_s))
        most, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= 1.0:
                start += 1
            most = max(most, end - start + 1)
        worst[domain] = {"cap_per_s": cap, "burst": burst, "most_in_any_second": most,
                         "violations": int(most > cap + burst)}
    report.add(name=f"rate fidelity at {rate:g}/s", processes=processes, messages=done1 - done0,
               seconds=round(t1 - t0, 1), msg_per_s=round(achieved, 1),
               off_by_percent=round(100 * (achieved - rate) / rate, 2), backlog=backlog,
               backlog_enqueue_per_s=round(backlog / enqueue_s), domain_caps=worst,
               fresh_sent=len(fresh_sent), fresh_delivered=len(latencies),
               fresh_p50_s=round(statistics.median(latencies), 3) if latencies else None,
               fresh_p99_s=round(latencies[int(len(latencies) * 0.99) - 1], 3) if latencies else None,
               fresh_max_s=round(latencies[-1], 3) if latencies else None)


def bench_capped(report: Report, client: redis.Redis, processes: int, mixed: bool, cap: float = 20.0,
                 window_s: float = 60.0, warmup_s: float = 5.0) -> None:
    """Does a capped domain reach its cap? A backlog for one domain capped at `cap`/s, alone
    in the queue or mixed with other traffic (a backlog to other, uncapped domains under a
    global rate of 300/s), drained by `processes` worker processes. The delivered rate is
    counted from the relay's own receive times over the window; the most sends in any one
    second is checked against cap + burst."""
    import threading

    from drain.demo.seeding import DOMAINS
    from drain.flow import ratelimit
    from drain.message import Envelope

    capped, global_rate = "capped.example.org", 300.0
    client.flushdb()
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    lock = threading.Lock()
    sends: dict[str, list[float]] = {}

    def record(_index: int, msg: Any) -> None:
        with lock:
            sends.setdefault(msg.recipients[0].rpartition("@")[2], []).append(msg.at)

    with Sink(keep=False, data_policy=record) as sink:
        settings = Settings(redis_url=url, relay=sink.url)
        api = Client(client, settings)
        ratelimit.pause(client)
        body = synthetic(0)
        mine = int(cap * (window_s + warmup_s) * 1.3) + 100
        others = int(global_rate * (window_s + warmup_s) * 1.3) if mixed else 0
        total = mine + others
        step = total / mine
        items = []
        for i in range(total):
            domain = capped if int(i % step) == 0 and int(i / step) < mine else DOMAINS[i % len(DOMAINS)]
            items.append((body, Envelope("billing@sender.example.com", (f"user{i}@{domain}",)), None))
        api.store.enqueue_many(items, lane="backlog")
        if mixed:
            ratelimit.set_global(client, global_rate)
        ratelimit.set_domain(client, capped, cap)
        ratelimit.resume(client)
        proc = start_workers(url, sink.url, processes)
        try:
            time.sleep(warmup_s)
            t0 = time.time()
            deferred_seen = []
            while time.time() - t0 < window_s:
                time.sleep(1.0)
                deferred_seen.append(int(client.zcard(keys.DEFERRED)))
            t1 = time.time()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    with lock:
        times = sorted(t for t in sends.get(capped, []) if t0 <= t <= t1)
        rest = sum(1 for d, ts in sends.items() if d != capped for t in ts if t0 <= t <= t1)
    burst = max(1, int(cap * settings.burst_s))
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    achieved = len(times) / (t1 - t0)
    report.add(name=f"capped domain at {cap:g}/s, {'mixed' if mixed else 'alone'}", processes=processes,
               messages=len(times), seconds=round(t1 - t0, 1), msg_per_s=round(achieved, 2),
               of_cap_percent=round(100 * achieved / cap, 1), most_in_any_second=most, cap_plus_burst=cap + burst,
               violations=int(most > cap + burst), other_msg_per_s=round(rest / (t1 - t0), 1),
               global_rate=global_rate if mixed else None,
               deferred_min=min(deferred_seen, default=0), deferred_max=max(deferred_seen, default=0))


def bench_eta(report: Report, client: redis.Redis, processes: int = 2, at_s: float = 10.0) -> None:
    """Does the ETA hold? A mixed backlog (two capped domains, uncapped mail under a global
    rate, one paused domain) is drained; the ETA `drain status` gives at_s seconds in is
    compared with the time the drain took (the paused domain's mail is left out and named)."""
    from drain.flow import ratelimit
    from drain.message import Envelope
    from drain.observe.status import read as read_status

    client.flushdb()
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    plan = {"cap20.example.org": (600, 20.0), "cap40.example.org": (800, 40.0), "paused.example.org": (100, None)}
    plan.update({f"open{i}.example.net": (500, None) for i in range(8)})
    global_rate = 150.0
    with Sink(keep=False) as sink:
        settings = Settings(redis_url=url, relay=sink.url)
        api = Client(client, settings)
        ratelimit.pause(client)
        body = synthetic(0)
        rows = [(d, i) for d, (n, _cap) in plan.items() for i in range(n)]
        rows.sort(key=lambda r: (r[1], r[0]))  # interleaved, as a real backlog
        api.store.enqueue_many(((body, Envelope("billing@sender.example.com", (f"u{i}@{d}",)), None)
                                for d, i in rows), lane="backlog")
        ratelimit.set_global(client, global_rate)
        for domain, (_n, cap) in plan.items():
            if cap:
                ratelimit.set_domain(client, domain, cap)
        ratelimit.pause_domain(client, "paused.example.org")
        ratelimit.resume(client)
        env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=sink.url)
        started = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--processes", str(processes),
                                 "--log-level", "ERROR"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            time.sleep(at_s)
            st = read_status(api.store)
            forecast_at = time.time() - started
            held = plan["paused.example.org"][0]
            while api.store.books().queued > held:
                if time.time() - started > 600:
                    raise RuntimeError("the drain did not finish in 600 s")
                time.sleep(POLL_S)
            actual = time.time() - started
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    predicted = forecast_at + (st.eta_s or 0.0)
    report.add(name="ETA forecast vs actual", processes=processes, messages=len(rows) - held,
               forecast_at_s=round(forecast_at, 1), eta_s=st.eta_s, predicted_total_s=round(predicted, 1),
               actual_total_s=round(actual, 1), error_percent=round(100 * (predicted - actual) / actual, 1),
               held_by=st.held_by, global_rate=global_rate, caps={d: c for d, (_n, c) in plan.items() if c})


def bench_backlog(report: Report, client: redis.Redis, count: int, domains: int, hours: float, runs: int = 5) -> None:
    """`drain backlog --json` (a process, as an operator runs it) and backlog.shape() in process,
    on `count` small messages accepted over the last `hours` hours to `domains` destination
    domains (a few big ones and a long tail, Zipf-like). The messages go through
    Store.enqueue_many with its clock set back for each chunk, so the message hashes, the
    backlog list and the shape counters are the real ones, with real ages. Also timed: the
    status page's whole refresh (every figure it shows) and one /metrics exposition."""
    import random
    from types import SimpleNamespace
    from unittest import mock

    import drain.store.store
    from drain.flow import ratelimit
    from drain.message import Envelope
    from drain.observe import backlog, metrics
    from drain.observe.http import redis_client
    from drain.observe.model import Reader, Reading
    from drain.store.store import ENQUEUE_CHUNK, Store

    client.flushdb()
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    settings = Settings(redis_url=url)
    store = Store(client, settings)
    ratelimit.pause(client)  # nothing drains meanwhile
    rng = random.Random(5)
    names = [f"mx{n}.example.com" for n in range(domains)]
    weights = [1 / (n + 1) for n in range(domains)]
    sender = "billing@sender.example.com"
    clock = [0.0]
    now = time.time()
    started = time.perf_counter()
    with mock.patch.object(drain.store, "time", SimpleNamespace(time=lambda: clock[0])):
        for first in range(0, count, ENQUEUE_CHUNK):
            size = min(ENQUEUE_CHUNK, count - first)
            clock[0] = now - hours * 3600 * (1 - first / count)
            chosen = rng.choices(names, weights, k=size)
            store.enqueue_many(((f"From: {sender}\nTo: u{first + i}@{dom}\nSubject: statement {first + i}\n\n"
                                 f"hello\n".encode(), Envelope(sender, (f"u{first + i}@{dom}",)), None)
                                for i, dom in enumerate(chosen)), lane="backlog")
    fill_s = time.perf_counter() - started
    env = dict(os.environ, DRAIN_REDIS_URL=url)

    def median_s(action: Any) -> float:
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            action()
            times.append(time.perf_counter() - t)
        return round(statistics.median(times), 4)

    outputs: list[bytes] = []

    def command(*args: str) -> None:
        result = subprocess.run([sys.executable, "-m", "drain", *args], env=env, capture_output=True, check=True)
        outputs.append(result.stdout)

    cli_s = median_s(lambda: command("backlog", "--json"))
    shaped = json.loads(outputs[-1])
    if shaped["total"] != count:
        raise RuntimeError(f"drain backlog counted {shaped['total']} of {count} queued")
    startup_s = median_s(lambda: command("--version"))
    status_s = median_s(lambda: command("status", "--json"))
    shape_s = median_s(lambda: backlog.shape(store))
    reader = Reader(Store(redis_client(url), settings))
    refresh_s = median_s(reader.read)
    figures = reader.read().figures
    exposition_s = median_s(lambda: metrics.exposition(metrics.registry(lambda: Reading(figures, True))))
    oldest = max((i for d in shaped["domains"] for i, n in enumerate(d["by_age"]) if n), default=0)
    report.add(name="drain backlog on a large backlog", messages=count, domains=len(shaped["domains"]),
               hours=hours, shape_fields=int(client.hlen(keys.SHAPE)), fill_seconds=round(fill_s, 1),
               fill_per_s=round(count / fill_s), redis_used_memory=used_memory(client),
               oldest_bucket_s=shaped["buckets_s"][oldest], runs=runs,
               drain_backlog_json_s=cli_s, drain_version_s=startup_s, drain_status_json_s=status_s,
               shape_in_process_s=shape_s, status_page_refresh_s=refresh_s, metrics_exposition_s=exposition_s,
               note="medians; the drain_* figures are whole processes (interpreter start and imports included: "
                    "see drain_version_s)")


def main() -> None:
    if sys.argv[1:3] == ["--only", "cells"]:  # Redis CPU per message over 1-3 cells: its own options
        import bench_cells

        bench_cells.main(sys.argv[3:])
        return
    if sys.argv[1:3] == ["--only", "tenants"]:  # issue 15's run: tenants, capped domains, a relay killed
        import bench_issue15

        bench_issue15.main(sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000, help="messages drained by drain")
    parser.add_argument("--naive-messages", type=int, default=10_000, help="messages drained by naive RQ")
    parser.add_argument("--processes", default="1,2,4", help="comma-separated worker process counts")
    parser.add_argument("--size", type=int, default=2048, help="message size in bytes")
    parser.add_argument("--sink", choices=["auto", "aiosmtpd"], default="auto")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--only", help="run only this part",
                        choices=["validation", "retry", "rate", "capped", "eta", "backlog", "sizes", "enqueue",
                                 "trace", "cells", "tenants"])
    parser.add_argument("--ingress", action="store_true",
                        help="measure only the SMTP ingress: messages/s accepted by `drain smtpd`")
    parser.add_argument("--ingress-messages", type=int, default=5000, help="messages per ingress run")
    parser.add_argument("--clients", default="1,4", help="comma-separated smtplib client counts (--ingress)")
    parser.add_argument("--smtpd-processes", default="1,2", help="comma-separated `drain smtpd --processes` "
                        "counts (--ingress)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of --ingress, --only sizes and --only enqueue (medians are reported); "
                        "events off/on pairs of --only trace")
    parser.add_argument("--backlog", type=int, default=None,
                        help="backlog size for --only rate (default 200,000) or --only backlog (1,000,000)")
    parser.add_argument("--domains", type=int, default=2000, help="destination domains for --only backlog")
    parser.add_argument("--hours", type=float, default=3.0, help="ages spread over this many hours (--only backlog)")
    parser.add_argument("--window", type=float, default=60.0,
                        help="seconds the rate-fidelity run measures (0 leaves it out of the full run)")
    parser.add_argument("--sizes", default="2048,20480,102400",
                        help="message sizes of the size series, bytes ('' leaves it out of the full run)")
    parser.add_argument("--size-messages", type=int, default=None,
                        help="messages per size (default: --messages with --only sizes, else 20,000)")
    parser.add_argument("--size-processes", default="2", help="drain worker processes in the size series")
    parser.add_argument("--size-sink", choices=["asyncio", "smtp-sink"], default="asyncio",
                        help="the size series' counting sink: scripts/bench_sink.py (~0.9 µs CPU per KB) or "
                             "Postfix's smtp-sink (~4.5 µs per KB)")
    parser.add_argument("--sessions", type=int, default=20, help="smtp-source sessions (Postfix, --ingress)")
    parser.add_argument("--lookup-messages", type=int, default=1_000_000,
                        help="delivered messages' events loaded for the trace lookup (--only trace)")
    parser.add_argument("--cprofile", type=int, default=0, help="--only enqueue: cProfile's top N functions")
    parser.add_argument("--producers", default="1,2",
                        help="--only enqueue: comma-separated producer process counts (the API path with N "
                        "processes at once; 1 is always measured)")
    parser.add_argument("--serve-sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only in ("cells", "tenants"):  # their own options, read above
        parser.error(f"--only {args.only} comes first: scripts/bench --only {args.only} [its options]")
    if args.serve_sink:
        serve_sink(args.serve_sink)
        return
    counts = [int(p) for p in args.processes.split(",")]
    if args.only == "validation":
        report = Report(machine={"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M")}, sink="-")
        bench_validation(report)
        print(markdown(report))
        return
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
               "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": round(os.getloadavg()[0], 1),
               "postfix": bench_postfix.version() if bench_postfix.missing() is None else None}
    if args.only == "rate":
        with redis_server() as client:
            report = Report(machine={"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")},
                            sink="aiosmtpd (records send times)")
            bench_rate(report, client, args.backlog or 200_000, counts[-1], window_s=args.window)
        print(json.dumps(report.rows[-1], indent=2))
        return
    if args.only == "capped":
        with redis_server() as client:
            report = Report(machine={"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")},
                            sink="aiosmtpd (records receive times)")
            for mixed in (False, True):
                for processes in counts:
                    bench_capped(report, client, processes, mixed, window_s=args.window)
        print(capped_markdown(report))
        if args.out:
            args.out.write_text(json.dumps({"machine": report.machine, "rows": report.rows}, indent=2))
            args.out.with_suffix(".md").write_text(capped_markdown(report) + "\n")
        return
    if args.only == "eta":
        with redis_server() as client:
            report = Report(machine={"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")},
                            sink="aiosmtpd")
            bench_eta(report, client, processes=counts[-1])
        print(json.dumps(report.rows[-1], indent=2))
        if args.out:
            args.out.write_text(json.dumps({"machine": report.machine, "rows": report.rows}, indent=2))
        return
    if args.only == "backlog":
        with redis_server() as client:
            report = Report(machine={"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"),
                                     "redis": client.info("server")["redis_version"]}, sink="-")
            bench_backlog(report, client, args.backlog or 1_000_000, args.domains, args.hours)
        print(json.dumps({"machine": report.machine, **report.rows[-1]}, indent=2))
        return
    if args.only == "retry":
        with redis_server() as client:
            report = Report(machine={"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")},
                            sink="aiosmtpd, scripted")
            bench_retry(report, client, args.messages, counts[-1])
        row = report.rows[-1]
        print(json.dumps(row, indent=2))
        if row["deferrals_off_policy"] or row["lost"] or not row["balanced"]:
            sys.exit(f"retry benchmark failed: {row['deferrals_off_policy']} deferrals off the backoff policy, "
                     f"{row['lost']} lost, books balanced: {row['balanced']}")
        return
    if args.only == "enqueue":
        with redis_server() as client:
            machine["redis"] = client.info("server")["redis_version"]
            rows = bench_enqueue.bench_enqueue(client, [int(s) for s in args.sizes.split(",") if s],
                                               args.size_messages or 20_000, args.rounds, args.cprofile,
                                               tuple(int(p) for p in args.producers.split(",") if p))
        write(args.out, machine, rows, header(machine) + bench_enqueue.enqueue_markdown(rows))
        return
    if args.only == "sizes":
        run_sizes(args, machine, args.size_messages or args.messages, args.out)
        return
    if args.only == "trace":
        run_trace(args, machine)
        return
    if args.ingress:
        with redis_server() as client:
            machine["redis"] = client.info("server")["redis_version"]
            rows = bench_ingress.bench_ingress(client, [int(p) for p in args.smtpd_processes.split(",")],
                                               [int(c) for c in args.clients.split(",") if c],
                                               args.ingress_messages, args.sessions, args.size, args.rounds)
        write(args.out, machine, rows, header(machine) + bench_ingress.ingress_markdown(rows))
        return
    with redis_server() as client, smtp_sink(args.sink == "auto") as (relay, sink_name):
        report = Report(machine=machine, sink=sink_name)
        machine["redis"] = client.info("server")["redis_version"]
        bench_validation(report)
        for processes in counts:
            bench_naive(report, client, relay, args.naive_messages, processes, args.size)
            bench_drain(report, client, relay, args.messages, processes, args.size)
        if args.window > 0:
            bench_rate(report, client, args.backlog or 200_000, max(counts), window_s=args.window)
    print(markdown(report))
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "sink": report.sink, "rows": report.rows}, indent=2))
        args.out.with_suffix(".md").write_text(markdown(report) + "\n")
    if args.sizes:
        run_sizes(args, machine, args.size_messages or 20_000,
                  args.out.with_name(args.out.stem + "-sizes.json") if args.out else None)


def run_sizes(args: argparse.Namespace, machine: dict[str, Any], count: int, out: Path | None) -> None:
    """The size series (scripts/bench_sizes.py): drain and Postfix per size, one run."""
    sizes = [int(s) for s in args.sizes.split(",") if s]
    processes = [int(p) for p in args.size_processes.split(",")]
    with redis_server() as client:
        machine = dict(machine, redis=client.info("server")["redis_version"],
                       postfix=bench_postfix.version() if bench_postfix.missing() is None else None)
        report = Report(machine=machine, sink=f"{args.size_sink} (counting)")
        bench_sizes.bench_sizes(report, client, count, processes, sizes, args.sessions, args.rounds, args.size_sink)
    write(out, machine, report.rows, header(machine) + bench_sizes.sizes_markdown(report.rows))


def header(m: dict[str, Any]) -> str:
    return (f"Machine: {m['cpus']} CPUs, Python {m['python']}, Redis {m.get('redis')}, Postfix {m.get('postfix')}, "
            f"{m['platform']}; {m['date']}; load average at the start {m.get('load_average')}\n\n")


def write(out: Path | None, machine: dict[str, Any], rows: list[dict[str, Any]], text: str) -> None:
    """Print the Markdown; with --out, the rows as JSON there and the Markdown beside it (.md)."""
    machine["load_average_end"] = round(os.getloadavg()[0], 1)
    text += f"\n\nLoad average at the end: {machine['load_average_end']}"
    print(text)
    if out:
        out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
        out.with_suffix(".md").write_text(text + "\n")


def run_trace(args: argparse.Namespace, machine: dict[str, Any]) -> None:
    """Events: lookup among --lookup-messages, then on/off throughput and memory per message."""
    with redis_server() as client, smtp_sink(args.sink == "auto") as (relay, sink_name):
        report = Report(machine=machine, sink=sink_name)
        machine["redis"] = client.info("server")["redis_version"]
        url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
        if args.lookup_messages > 0:  # 0: only the cost rows
            bench_trace.bench_lookup(report, client, args.lookup_messages, url)
        processes = max(int(p) for p in args.processes.split(","))
        bench_trace.bench_cost(report, client, url, relay, args.messages, processes, args.rounds, wait_done)
    print(json.dumps({"machine": machine, "sink": report.sink, "rows": report.rows}, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "sink": report.sink, "rows": report.rows}, indent=2))


def capped_markdown(report: Report) -> str:
    lines = [f"Machine: {report.machine['cpus']} CPUs; {report.machine['date']}; sink: {report.sink}", "",
             "| run | processes | seconds | delivered/s | of cap | most in any 1 s (cap+burst) | "
             "other mail/s | deferred min..max |", "|---|---|---|---|---|---|---|---|"]
    for r in report.rows:
        lines.append(f"| {r['name']} | {r['processes']} | {r['seconds']} | {r['msg_per_s']} | {r['of_cap_percent']}% | "
                     f"{r['most_in_any_second']} ({r['cap_plus_burst']:g}) | {r['other_msg_per_s']} | "
                     f"{r['deferred_min']}..{r['deferred_max']} |")
    return "\n".join(lines)


def markdown(report: Report) -> str:
    m = report.machine
    lines = [f"Machine: {m['cpus']} CPUs, Python {m['python']}, Redis {m.get('redis')}, {m['platform']}; "
             f"sink: {report.sink}; {m['date']}", "",
             "| run | processes | messages | seconds | msg/s | enqueue msg/s |", "|---|---|---|---|---|---|"]
    for r in report.rows:
        lines.append(f"| {r['name']} | {r.get('processes', '')} | {r['messages']:,} | {r.get('seconds', '')} | "
                     f"{r['msg_per_s']:,} | {r.get('enqueue_per_s', '')} |")
    for r in report.rows:
        if r["name"].startswith("rate fidelity"):
            caps = "; ".join(f"{d}: cap {c['cap_per_s']:g}/s, most in any second {c['most_in_any_second']}, "
                             f"violations {c['violations']}" for d, c in r["domain_caps"].items())
            lines.append(f"\n{r['name']} with {r['processes']} processes over {r['seconds']} s on a "
                         f"{r['backlog']:,}-message backlog: {r['msg_per_s']:,}/s ({r['off_by_percent']:+}%); "
                         f"{caps}; fresh mail p50 {r['fresh_p50_s']} s, p99 {r['fresh_p99_s']} s, max "
                         f"{r['fresh_max_s']} s ({r['fresh_delivered']} of {r['fresh_sent']})")
    naive = {r["processes"]: r["msg_per_s"] for r in report.rows if r["name"].startswith("naive")}
    for r in report.rows:
        if r["name"] == "drain" and r["processes"] in naive:
            lines.append(f"\ndrain / naive RQ with {r['processes']} processes: "
                         f"{r['msg_per_s'] / naive[r['processes']]:.1f}x; Redis per queued message: "
                         f"{r['redis_bytes_per_queued_msg']} B ({r['redis_overhead_per_msg']} B beyond the "
                         f"{r['avg_message_bytes']} B message); after the drain: {r['redis_bytes_after_drain']:,} B "
                         f"used in all")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
