"""CPU per message of the replay's relay: aiosmtpd (the Sink the replay used before) against
replay_relay's asyncio protocol, each in its own process, fed the same synthetic 2 KB
messages over one pipelined session by drain's own relay client. The relay's CPU time is
read from the kernel when it exits (it includes its start-up, ~0.4 s).

    .venv/bin/python scripts/relay_cost.py --messages 8000 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from drain.demo.seeding import synthetic, with_message_id  # noqa: E402
from drain.demo.sink import free_port  # noqa: E402
from drain.worker.delivery import Relay, RelayConfig  # noqa: E402

SERVER = """
import asyncio, signal, sys, threading
sys.path[:0] = [{scripts!r}, {root!r}]
kind, port = sys.argv[1], int(sys.argv[2])
taken = []
def policy(mid, rcpt, at):
    taken.append(mid)
    return None
if kind == "aiosmtpd":
    from drain.demo.sink import Sink
    with Sink(keep=False, data_policy=lambda i, msg: policy(msg.message_id, msg.recipients[0], msg.at), port=port):
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        done.wait()
else:
    import replay_relay
    async def run():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await replay_relay.serve(port, policy, stop)
    asyncio.run(run())
assert len(set(taken)) == len(taken), "a message twice"
"""


def one(kind: str, messages: list[bytes]) -> tuple[float, float]:
    port = free_port()
    code = SERVER.format(scripts=str(HERE), root=str(HERE.parent))
    server = subprocess.Popen([sys.executable, "-c", code, kind, str(port)])
    relay = Relay(RelayConfig.from_url(f"smtp://127.0.0.1:{port}"))
    deadline = time.time() + 20
    while relay.send("a@example.com", ["b@example.org"], messages[0]).kind != "delivered":
        if time.time() > deadline:
            raise SystemExit(f"{kind} relay did not start")
        time.sleep(0.1)
    started = time.time()
    for raw in messages[1:]:
        result = relay.send("a@example.com", ["b@example.org"], raw)
        assert result.kind == "delivered", result
    wall = time.time() - started
    server.terminate()
    _pid, _status, usage = os.wait4(server.pid, 0)
    return (len(messages) - 1) / wall, (usage.ru_utime + usage.ru_stime) * 1e6 / len(messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    messages = [with_message_id(synthetic(i), f"<m{i}@relay-cost>") for i in range(args.messages)]
    print("| relay | round | msg/s through one session | relay CPU µs per message |")
    print("|---|---|---|---|")
    for round_ in range(1, args.rounds + 1):
        for kind in ("aiosmtpd", "replay_relay"):
            rate, cpu = one(kind, messages)
            print(f"| {kind} | {round_} | {rate:,.0f} | {cpu:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
