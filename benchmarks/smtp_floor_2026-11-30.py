"""The CPU of drain's SMTP path against a bare socket loop, one session to Postfix's smtp-sink.

Per message: `raw` writes MAIL FROM, RCPT TO and DATA in one write, reads the three replies,
writes the prepared DATA block and reads the last reply (blocking socket, then with a
timeout as smtplib's socket has); `drain Relay` is drain.worker.delivery.Relay.send on the
same message (wire form, DATA block, pipelined commands, replies judged). CPU is this
thread's (time.thread_time), µs per message; wall includes waiting for the sink.

    cd <tree> && PYTHONPATH=$PWD:$PWD/scripts .venv/bin/python benchmarks/smtp_floor_2026-11-30.py 2048
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path.cwd() / "scripts"))
import bench_postfix
import bench_sizes

from drain.worker import delivery
from drain.worker.relayconfig import RelayConfig

N = 3000


def raw_loop(port: int, block: bytes, timeout: float | None) -> tuple[float, float]:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(timeout)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"EHLO x\r\n")
    while f.readline()[3:4] == b"-":
        pass
    cmds = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(N):
        s.sendall(cmds)
        f.readline()
        f.readline()
        f.readline()
        s.sendall(block)
        f.readline()
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    s.close()
    return cpu / N * 1e6, wall / N * 1e6


def drain_loop(port: int, raw: bytes) -> tuple[float, float]:
    relay = delivery.Relay(RelayConfig.from_url(f"smtp://127.0.0.1:{port}"))
    relay.send("a@example.com", ["b@example.net"], raw)
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(N):
        result = relay.send("a@example.com", ["b@example.net"], raw)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    assert result.kind == "delivered", result
    relay.close()
    return cpu / N * 1e6, wall / N * 1e6


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    port = random.randint(30000, 40000)
    binary = bench_postfix.tool("smtp-sink") or "smtp-sink"
    sink = subprocess.Popen([binary, "-u", "nobody", f"127.0.0.1:{port}", "100"])
    time.sleep(0.5)
    raw = bench_sizes.message(1, size)
    block = delivery.data_block(delivery.wire_form(raw))
    try:
        for _ in range(2):
            print("raw blocking   cpu {:.1f} wall {:.1f}".format(*raw_loop(port, block, None)))
            print("raw timeout    cpu {:.1f} wall {:.1f}".format(*raw_loop(port, block, 30.0)))
            print("drain Relay    cpu {:.1f} wall {:.1f}".format(*drain_loop(port, raw)))
    finally:
        sink.kill()


if __name__ == "__main__":
    main()
