"""Load on the status page: N concurrent clients for S seconds, plus M idle or slowloris
connections held open the whole time, all on loopback. Prints latency percentiles, failures,
what happened to the held connections and the server's thread count (when it started it).

    scripts/load-status-page                       # starts redis-server + drain serve, 200 clients, 30 s, 1,000 held
    scripts/load-status-page --clients 50 --seconds 10 --held 300
    scripts/load-status-page --url http://127.0.0.1:8025/ --pid 1234

Each client keeps one HTTP/1.1 connection and asks for /, /status.json, /healthz and /metrics
in turn, as fast as it is answered (--think adds a pause between a client's requests). A
request not answered within --timeout is a failure, as is a refused or reset connection.
Held connections (in a second process, so that they do not slow the measuring clients): half
send nothing (idle), half send a request one header line every --drip seconds and never finish
it (slowloris); one the server closes is opened again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
PATHS = ("/", "/status.json", "/healthz", "/metrics")
MAX_CLIENTS, MAX_HELD, MAX_SECONDS = 2000, 5000, 600


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    by_path: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    held_open: int = 0
    held_closed_by_server: int = 0
    held_refused: int = 0

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) after reading the whole response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, code = lines[0].split(" ", 2)[:2]
    status = int(code)
    length, keep = 0, version == "HTTP/1.1"  # HTTP/1.0: closed after the answer unless it says keep-alive
    for line in lines[1:]:
        name, _sep, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            keep = value == "keep-alive" or (keep and value != "close")
    if length:
        await reader.readexactly(length)
    return status, keep


async def client(host: str, port: int, until: float, think: float, timeout: float, tally: Tally,
                 offset: int) -> None:
    n = offset
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.monotonic() < until:
        path = PATHS[n % len(PATHS)]
        n += 1
        started = time.monotonic()
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            reader, writer = conn
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: load-status-page\r\n\r\n"
                         .encode())
            status, keep = await asyncio.wait_for(read_response(reader), timeout)
        except TimeoutError:
            tally.fail("timeout")
            conn = await _close(conn)
            continue
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            tally.fail(type(exc).__name__)
            conn = await _close(conn)
            continue
        elapsed = time.monotonic() - started
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if status != 200:
            tally.fail(f"HTTP {status}")
        tally.latencies.append(elapsed)
        tally.by_path.setdefault(path, []).append(elapsed)
        if not keep:
            conn = await _close(conn)
        if think:
            await asyncio.sleep(think)
    await _close(conn)


async def _close(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
    if conn is not None:
        conn[1].close()
        with contextlib.suppress(OSError):
            await conn[1].wait_closed()
    return None


async def held(host: str, port: int, until: float, slow: bool, drip: float, tally: Tally) -> None:
    """One connection kept open until the end: idle, or a request that never ends (slowloris)."""
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            tally.held_refused += 1
            await asyncio.sleep(1.0)
            continue
        tally.held_open += 1
        try:
            if slow:
                writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n".encode())
            n = 0
            while time.monotonic() < until:
                if slow:
                    writer.write(f"X-Drip-{n}: x\r\n".encode())
                    n += 1
                try:
                    data = await asyncio.wait_for(reader.read(1024), drip)
                except TimeoutError:
                    continue
                if not data:  # the server closed it
                    tally.held_closed_by_server += 1
                    break
        except OSError:
            tally.held_closed_by_server += 1
        finally:
            tally.held_open -= 1
            writer.close()


def threads_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def fds_of(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def hold_all(host: str, port: int, count: int, seconds: float, drip: float, opened: Any, out: Any) -> None:
    """In a process of its own (so that its reconnections do not delay the measuring clients):
    hold `count` connections for `seconds`; reports how many opened at first, then its tally."""

    async def main() -> Tally:
        tally = Tally()
        until = time.monotonic() + seconds
        tasks = [asyncio.create_task(held(host, port, until, n % 2 == 1, drip, tally)) for n in range(count)]
        deadline = time.monotonic() + 30
        while tally.held_open + tally.held_refused < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        opened.put(tally.held_open)
        await asyncio.gather(*tasks, return_exceptions=True)
        return tally

    tally = asyncio.run(main())
    out.put((tally.held_closed_by_server, tally.held_refused))


async def run(args: argparse.Namespace, host: str, port: int, pid: int | None) -> dict[str, object]:
    tally = Tally()
    opened: Any = multiprocessing.Queue()
    out: Any = multiprocessing.Queue()
    holder = multiprocessing.Process(target=hold_all, args=(host, port, args.held, args.seconds + 5, args.drip,
                                                            opened, out), daemon=True)
    holder.start()
    # The held connections open first: the clients then meet a server that already holds them.
    held_at_start = await asyncio.get_running_loop().run_in_executor(None, opened.get)
    start = time.monotonic()
    until = start + args.seconds
    threads: list[int] = []

    async def sample() -> None:
        while time.monotonic() < until:
            if pid is not None and (n := threads_of(pid)) is not None:
                threads.append(n)
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    fds_peak = fds_of(pid) if pid else None
    clients = [asyncio.create_task(client(host, port, until, args.think, args.timeout, tally, n))
               for n in range(args.clients)]
    await asyncio.gather(*clients)
    if pid:
        fds_peak = max(fds_peak or 0, fds_of(pid) or 0)
    await sampler
    closed_by_server, refused = await asyncio.get_running_loop().run_in_executor(None, out.get)
    holder.join()
    lat = sorted(tally.latencies)

    def pct(values: list[float], q: float) -> float | None:
        return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1) if values else None

    return {
        "clients": args.clients, "seconds": args.seconds, "held": args.held, "think_s": args.think,
        "requests": len(lat), "per_s": round(len(lat) / args.seconds, 1),
        "ms": {"p50": pct(lat, 0.50), "p90": pct(lat, 0.90), "p99": pct(lat, 0.99),
               "max": round(lat[-1] * 1000, 1) if lat else None},
        "p99_ms_by_path": {p: pct(sorted(v), 0.99) for p, v in sorted(tally.by_path.items())},
        "failures": sum(tally.failures.values()), "failure_kinds": tally.failures,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "held_open_at_start": held_at_start, "held_closed_by_server": closed_by_server,
        "held_refused": refused,
        "server_threads": {"min": min(threads), "max": max(threads)} if threads else None,
        "server_fds_peak": fds_peak,
        "load_average": os.getloadavg(),
    }


def start_server(workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """A redis-server with a small backlog (some paused, some capped, some quarantined) and drain serve."""
    sys.path.insert(0, str(ROOT))
    import redis

    from drain.demo.seeding import synthetic
    from drain.demo.sink import free_port
    from drain.flow import ratelimit
    from drain.intake.api import Client, Submission
    from drain.settings import Settings
    from drain.store.embedded import spawn_on_port

    redis_port = free_port()
    redis_proc = spawn_on_port(redis_port, workdir)
    url = f"redis://127.0.0.1:{redis_port}/0"
    api = Client(redis.Redis(port=redis_port), Settings(redis_url=url))
    ratelimit.pause(api.redis)
    domains = ["example.com", "example.org", "example.net", "shop.example.net", "mail.example.io"]
    api.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@{domains[i % len(domains)]}",))
                      for i in range(2000)])
    ratelimit.set_domain(api.redis, "example.net", 20.0)
    ratelimit.pause_domain(api.redis, "shop.example.net")
    env = dict(os.environ, DRAIN_REDIS_URL=url)
    serve = subprocess.Popen([sys.executable, "-m", "drain", "serve", "--listen", f"127.0.0.1:{port}"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if serve.poll() is not None or time.monotonic() > deadline:
                err = serve.stderr.read().decode() if serve.stderr else ""
                raise SystemExit(f"drain serve did not start: {err}") from None
            time.sleep(0.1)
    time.sleep(1.0)  # its first snapshot
    return redis_proc, serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running status page on loopback (default: start one)")
    parser.add_argument("--pid", type=int, help="its process id, to count its threads")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--held", type=int, default=1000, help="idle + slowloris connections held meanwhile")
    parser.add_argument("--think", type=float, default=0.0, help="seconds between one client's requests")
    parser.add_argument("--timeout", type=float, default=5.0, help="a request slower than this is a failure")
    parser.add_argument("--drip", type=float, default=2.0, help="seconds between a slowloris connection's lines")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args()
    if not (1 <= args.clients <= MAX_CLIENTS and 0 <= args.held <= MAX_HELD and 0 < args.seconds <= MAX_SECONDS):
        parser.error(f"bounds: 1..{MAX_CLIENTS} clients, 0..{MAX_HELD} held, 0..{MAX_SECONDS} seconds")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * (args.clients + args.held) + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    procs: tuple[subprocess.Popen[bytes], ...] = ()
    pid = args.pid
    with tempfile.TemporaryDirectory(prefix="drain-load-") as tmp:
        try:
            if args.url:
                parts = urlsplit(args.url)
                host, port = parts.hostname or "", parts.port or 80
                try:
                    loopback = ipaddress.ip_address(host).is_loopback
                except ValueError:
                    loopback = host == "localhost"
                if not loopback:
                    parser.error("--url must be on loopback (127.0.0.0/8, ::1 or localhost)")
            else:
                sys.path.insert(0, str(ROOT))
                from drain.demo.sink import free_port

                host, port = "127.0.0.1", free_port()
                procs = start_server(Path(tmp), port)
                pid = procs[1].pid
            figures = asyncio.run(run(args, host, port, pid))
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    print(f"pid {proc.pid} did not stop within 30 s of SIGTERM: killed", file=sys.stderr)
                    proc.kill()
                    proc.wait()
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    ms = figures["ms"]
    print(f"{figures['clients']} clients for {figures['seconds']:g} s (think {args.think:g} s), "
          f"{figures['held']} idle/slowloris connections held")
    print(f"  requests {figures['requests']:,} ({figures['per_s']:,}/s), failures {figures['failures']} "
          f"{figures['failure_kinds'] or ''}")
    print(f"  latency ms: p50 {ms['p50']}  p90 {ms['p90']}  p99 {ms['p99']}  max {ms['max']}")  # type: ignore[index]
    print(f"  p99 ms by path: {figures['p99_ms_by_path']}")
    print(f"  held: {figures['held_open_at_start']} open at start, {figures['held_closed_by_server']} closed by the "
          f"server, {figures['held_refused']} refused")
    print(f"  server threads: {figures['server_threads']}, open fds at peak: {figures['server_fds_peak']}; "
          f"machine load average at the end: {figures['load_average']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
