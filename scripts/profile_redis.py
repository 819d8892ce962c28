"""Where redis-server's CPU goes per delivered message on the drain side, step by step, without
workers, RQ or SMTP: a loop of the worker's Redis steps (claim a batch, read it back, journal
every DRAIN_SETTLE_EVERY messages as delivered, settle the journal) against its own redis-server, each step's
redis-server CPU time (INFO cpu) and commands (INFO commandstats) read around it.

    .venv/bin/python scripts/profile_redis.py --messages 5000
    .venv/bin/python scripts/profile_redis.py --lua /tmp/scratch-lua   # scripts from a scratch copy

--lua reads the Lua scripts from another folder (a copy of drain/store/lua with parts taken
out), to see what a part of a script costs.

--callgrind DIR runs redis-server under valgrind's callgrind and counts the instructions it
executes (a figure the other processes on a shared machine do not move, unlike CPU time):
the enqueue, each claim (with its read back) and each claim's settles dumped to their own file in DIR
(callgrind_annotate DIR/callgrind.out.*: which functions, Lua's or Redis's).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import free_port
from drain.flow import ratelimit
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import connection, embedded, events, keys
from drain.store import scripts as lua_scripts
from drain.store.store import Outcome, Store

TRACE = True
SETTLE_EVERY = 3
REPLY = "250 2.0.0 Ok: queued as 4Xk2Vb0Lz3z9abc"


def delivered(msg_id: str) -> Outcome:
    """A delivery as the worker settles it (its event's data made by the worker, where the
    tree profiled can: one from before deliver.lua cannot)."""
    if hasattr(events, "delivered_data"):
        return Outcome(msg_id, "delivered", envelope=REPLY, event=events.delivered_data(REPLY, 1, 0.5))
    return Outcome(msg_id, "delivered", envelope=REPLY)


def settle_claim(store: Store, owner: str, ids: list[str], every: int) -> None:
    """Settle a claim's messages as delivered as the worker does: every `every` to the
    delivery journal, the journal settled at the end (a tree from before the journal:
    settled every `every`)."""
    if not hasattr(store, "journal"):
        for i in range(0, len(ids), every):
            store.settle(owner, [delivered(m) for m in ids[i:i + every]])
        return
    if not hasattr(store, "elements"):  # a tree from before deliveries settled with the journal's
        for i in range(0, len(ids), every):
            store.journal(owner, [delivered(m) for m in ids[i:i + every]], first=i == 0)
        store.commit(owner)
        return
    # Every full window to the journal; the rest settled with it at the end of the claim.
    full = len(ids) - (len(ids) % every or every)
    for i in range(0, full, every):
        store.journal(owner, [delivered(m) for m in ids[i:i + every]], first=i == 0)
    store.settle(owner, [delivered(m) for m in ids[full:]])


def worker_owner() -> str:
    """An owner's name as a worker makes it (host-pid-token)."""
    return f"{socket.gethostname()}-{os.getpid()}-0123abcd"


Snapshot = tuple[float, float, dict[str, tuple[int, int]]]


def snapshot(client: redis.Redis) -> Snapshot:
    """redis-server's CPU seconds (user, system) and its commandstats."""
    cpu = client.info("cpu")
    stats = {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
             for k, v in client.info("commandstats").items()}
    return float(cpu["used_cpu_user"]), float(cpu["used_cpu_sys"]), stats


class Phase:
    def __init__(self) -> None:
        self.cpu = 0.0
        self.sys = 0.0
        self.stats: dict[str, list[int]] = {}

    def add(self, before: Snapshot, after: Snapshot) -> None:
        self.cpu += after[0] - before[0] + after[1] - before[1]
        self.sys += after[1] - before[1]
        for name, (calls, usec) in after[2].items():
            c0, u0 = before[2].get(name, (0, 0))
            if calls - c0 and name != "info":
                row = self.stats.setdefault(name, [0, 0])
                row[0] += calls - c0
                row[1] += usec - u0

    def report(self, count: int) -> dict[str, Any]:
        rows = sorted(self.stats.items(), key=lambda kv: -kv[1][1])
        return {"cpu_us_per_msg": round(self.cpu * 1e6 / count, 1), "of_it_sys": round(self.sys * 1e6 / count, 1),
                "commands": {n: [round(c / count, 3), round(u / count, 2)] for n, (c, u) in rows}}


def callgrind_server(out: Path) -> None:
    """Start every redis-server from here on under callgrind, instrumentation off until asked."""
    real = embedded.server_binary()
    out.mkdir(parents=True, exist_ok=True)
    wrapper = out / "redis-under-callgrind"
    wrapper.write_text(f"#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no "
                       f"--callgrind-out-file={out}/callgrind.out.%p {real} \"$@\"\n")
    wrapper.chmod(0o755)
    embedded.server_binary = lambda: str(wrapper)


def callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def instructions(out: Path, part: int) -> int:
    """Instructions counted in one dump (the total line of its file)."""
    for path in out.glob(f"callgrind.out.*.{part}"):
        found = re.search(r"^totals: (\d+)", path.read_text(errors="replace"), re.MULTILINE)
        if found:
            return int(found.group(1))
    return 0


@contextlib.contextmanager
def loaded(count: int, size: int, timeout_s: float = 10.0,
           around: Callable[[int], contextlib.AbstractContextManager[Any]] = lambda _pid: contextlib.nullcontext(),
           ) -> Iterator[tuple[subprocess.Popen[bytes], Store]]:
    """A redis-server of its own holding `count` ready messages of `size` bytes, and a Store on
    it; the enqueue runs inside around(the server's pid)."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = embedded.spawn_on_port(port, Path(tmp), timeout_s=timeout_s)
        try:
            client = redis.Redis(port=port)
            settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", relay="smtp://127.0.0.1:1", trace=TRACE,
                                settle_every=SETTLE_EVERY)
            ratelimit.pause(client)
            items = [synthetic(i, size=size) for i in range(count)]
            with around(proc.pid):
                Client.connect(settings).enqueue_many(items)
            ratelimit.resume(client)
            yield proc, Store(client, settings)
        finally:
            proc.terminate()
            proc.wait()


def counted(count: int, size: int, out: Path, others: int = 0) -> dict[str, Any]:
    """Instructions redis-server executes per message for the claims (with the reads back)
    and for the settles (others: ids of other owners put in flight first, so that the
    in-flight hash is a hash table, as with several workers, not a listpack)."""
    callgrind_server(out)
    # Under callgrind an enqueue call of a thousand messages takes far longer than a client's
    # usual timeouts allow.
    connection._CLIENT_OPTIONS.update(socket_timeout=600, socket_connect_timeout=600)

    @contextlib.contextmanager
    def enqueue_counted(pid: int) -> Iterator[None]:
        callgrind(pid, "-i", "on")
        yield
        callgrind(pid, "-d")  # dump 1: the enqueue
        callgrind(pid, "-i", "off")

    with loaded(count, size, timeout_s=120, around=enqueue_counted) as (proc, store):
        settings = store.settings
        owner = worker_owner()
        every = settings.settle_every
        if others:
            store.client.hset(keys.INFLIGHT, mapping={f"other{i}": "other-host-1-0123abcd/1" for i in range(others)})
        callgrind(proc.pid, "-i", "on")
        done, parts = 0, 1
        while True:
            claim = store.claim(owner, settings.batch_size)
            store.load(claim.ids)
            callgrind(proc.pid, "-d")  # dump 2, 4, 6...: claims and reads back
            parts += 1
            if not claim.ids:
                break
            settle_claim(store, owner, claim.ids, every)
            callgrind(proc.pid, "-d")  # dump 3, 5, 7...: settles
            parts += 1
            done += len(claim.ids)
        callgrind(proc.pid, "-i", "off")
        return {"messages": done, "size": size, "balanced": store.books().balanced,
                "enqueue_instructions_per_msg": round(instructions(out, 1) / count),
                "claim_and_load_instructions_per_msg":
                    round(sum(instructions(out, p) for p in range(2, parts + 1, 2)) / done),
                "settle_instructions_per_msg":
                    round(sum(instructions(out, p) for p in range(3, parts + 1, 2)) / done)}


def run(count: int, size: int) -> dict[str, Any]:
    with loaded(count, size) as (_proc, store):
        client, settings = store.client, store.settings
        phases = {name: Phase() for name in ("claim", "load", "settle", "probe")}
        owner = worker_owner()
        done = 0
        started = time.perf_counter()
        while True:
            s0 = snapshot(client)
            claim = store.claim(owner, settings.batch_size)
            s1 = snapshot(client)
            phases["claim"].add(s0, s1)
            if not claim.ids:
                break
            store.load(claim.ids)
            s2 = snapshot(client)
            phases["load"].add(s1, s2)
            phases["probe"].add(s2, snapshot(client))  # what reading the figures costs
            every = settings.settle_every
            s3 = snapshot(client)
            settle_claim(store, owner, claim.ids, every)
            phases["settle"].add(s3, snapshot(client))
            done += len(claim.ids)
        wall = time.perf_counter() - started
        books = store.books()
        return {"messages": done, "size": size, "wall_s": round(wall, 2), "balanced": books.balanced,
                **{name: p.report(max(1, done)) for name, p in phases.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--lua", default=None, help="read the Lua scripts from this folder")
    parser.add_argument("--callgrind", default=None, metavar="DIR", help="count redis-server's instructions")
    parser.add_argument("--settle-every", type=int, default=3, help="DRAIN_SETTLE_EVERY (3)")
    parser.add_argument("--no-trace", action="store_true", help="events off (DRAIN_TRACE=off)")
    parser.add_argument("--others", type=int, default=0,
                        help="with --callgrind: ids of other owners in flight (300: a hash table, as with 2 processes)")
    args = parser.parse_args()
    global TRACE, SETTLE_EVERY
    TRACE = not args.no_trace
    SETTLE_EVERY = args.settle_every
    if args.lua:
        folder = Path(args.lua)
        lua_scripts._read = lambda name: (folder / f"{name}.lua").read_text(encoding="utf-8")
        lua_scripts.source.cache_clear()
    if args.callgrind:
        print(json.dumps(counted(args.messages, args.size, Path(args.callgrind), args.others), indent=1))
    else:
        print(json.dumps(run(args.messages, args.size), indent=1))


if __name__ == "__main__":
    main()
