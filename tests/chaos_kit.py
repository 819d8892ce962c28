"""Helpers for tests that break things on purpose: a redis-server of the test's own that can
be killed and restarted on its files, fleets of `drain worker` processes to SIGKILL, and
a relay policy that drops, stalls and refuses on a seeded share of messages."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from drain.demo.sink import DROP, Action, Received, Stall, free_port
from drain.store import keys
from drain.store.embedded import server_binary


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll with a deadline; predicate errors (Redis away) count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class RedisProc:
    """A redis-server on a free port with its own folder; append-only, fsync on every write."""

    def __init__(self, folder: Path, *extra: str, port: int | None = None, binary: str | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = list(extra)
        self.binary = binary or server_binary()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
                "--loglevel", "warning", "--logfile", str(self.folder / "redis.log"), *self.extra]

    def start(self, password: str | None = None) -> RedisProc:
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = redis.Redis(port=self.port, password=password, socket_timeout=2)

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, (
                f"redis-server exited: {(self.folder / 'redis.log').read_text(errors='replace')[-500:]}")
            try:
                # Ours, not another program's that took the port while ours was down.
                return int(probe.info("server")["process_id"]) == self.proc.pid
            except redis.BusyLoadingError:
                return False
            except redis.ConnectionError:
                return False

        try:
            wait_until(up, 15, f"redis-server on port {self.port}")
        finally:
            probe.close()
        return self

    def kill(self) -> None:
        """SIGKILL: what was acknowledged is on disk (appendfsync always); nothing else is saved."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self, down_s: float = 0.5, password: str | None = None) -> None:
        self.kill()
        time.sleep(down_s)  # the outage itself, on purpose
        self.start(password)
        self.restarts += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def children(pid: int) -> list[int]:
    """Pids whose parent is pid (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may hold spaces, so split after it.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def owner_pid(owner: str) -> int | None:
    """The process id in a worker's owner name (host-pid-token), if it has one."""
    parts = owner.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def holdings(client: redis.Redis, pids: Sequence[int]) -> dict[int, set[str]]:
    """Ids that each of the worker processes `pids` has claimed, from the in-flight hash."""
    held: dict[int, set[str]] = {pid: set() for pid in pids}
    for msg_id, owner in client.hgetall(keys.INFLIGHT).items():
        pid = owner_pid(owner.decode())
        if pid in held:
            held[pid].add(msg_id.decode())
    return held


@dataclass
class Kill:
    """One worker process SIGKILLed and the ids it held, read from Redis while it was
    stopped (SIGSTOP), so nothing moved between the reading and the kill."""

    pid: int
    held: set[str]
    charged: set[str] = field(default_factory=set)  # ids delivered twice because of this kill


def charge(kills: Sequence[Kill], copies: Counter[str], key_of: dict[str, str]) -> dict[str, int]:
    """Charge every extra copy the relay got to a kill whose worker held that message
    (one copy per kill and message, earliest kill first); returns the copies no kill explains.

    copies: relay acceptances by message key (its Message-ID); key_of: drain id -> that key."""
    held_by: dict[str, list[Kill]] = {}
    for kill in kills:
        for msg_id in kill.held:
            if msg_id in key_of:
                held_by.setdefault(key_of[msg_id], []).append(kill)
    unexplained: dict[str, int] = {}
    for key, n in copies.items():
        extra = n - 1
        for kill in held_by.get(key, [])[:max(0, extra)]:
            kill.charged.add(key)
            extra -= 1
        if extra > 0:
            unexplained[key] = extra
    return unexplained


def freeze_and_read(client: redis.Redis, pids: Sequence[int]) -> dict[int, set[str]] | None:
    """SIGSTOP pids and read what they hold; None (and SIGCONT) if Redis cannot be read."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        return holdings(client, pids)
    except redis.RedisError:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        return None


@dataclass
class Member:
    """One `drain worker --processes N` command, in a process group of its own."""

    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Fleet:
    """`drain worker` commands to start, SIGKILL and start again; stderr kept per start."""

    env: dict[str, str]
    folder: Path
    processes: int = 2
    members: list[Member] = field(default_factory=list)
    starts: int = 0
    client: redis.Redis | None = None  # to read what a worker holds before it is killed
    kills: int = 0  # SIGKILLs sent
    workers_killed: int = 0  # worker processes (which hold messages) among them
    kill_log: list[Kill] = field(default_factory=list)

    def start(self) -> Member:
        self.starts += 1
        log = self.folder / f"worker-{self.starts}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "drain", "worker", "--processes", str(self.processes),
                 "--log-level", "WARNING"],
                env=self.env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        member = Member(proc, log)
        self.members.append(member)
        return member

    def alive(self) -> list[Member]:
        return [m for m in self.members if m.proc.poll() is None]

    def kill_worker(self, rng: random.Random) -> bool:
        """SIGKILL one worker process of a random member (its pool starts another)."""
        pool = [(m, c) for m in self.alive() for c in children(m.proc.pid)]
        if not pool:
            return False
        _member, pid = rng.choice(pool)
        held = self._held_before_kill([pid])
        if held is None:
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.kills += 1
        self.workers_killed += 1
        self.kill_log.append(Kill(pid, held[pid]))
        return True

    def _held_before_kill(self, pids: list[int]) -> dict[int, set[str]] | None:
        if self.client is None:
            return {pid: set() for pid in pids}
        return freeze_and_read(self.client, pids)

    def kill_member(self, rng: random.Random) -> Member | None:
        """SIGKILL a whole member (pool and workers) at once; returns it, to be started again."""
        alive = self.alive()
        if not alive:
            return None
        member = rng.choice(alive)
        pids = children(member.proc.pid)
        os.killpg(member.proc.pid, signal.SIGSTOP)  # the pool too: it must not start another
        held = self._held_before_kill(pids)
        if held is None:
            os.killpg(member.proc.pid, signal.SIGCONT)
            return None
        os.killpg(member.proc.pid, signal.SIGKILL)
        member.proc.wait(timeout=10)
        self.kills += 1
        self.workers_killed += len(pids)
        self.kill_log.extend(Kill(pid, ids) for pid, ids in held.items())
        return member

    def stop(self) -> None:
        for member in self.alive():
            os.killpg(member.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for member in self.members:
            try:
                member.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(member.proc.pid, signal.SIGKILL)
                member.proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"--- {m.log.name}\n{m.log.read_text(errors='replace')[-3000:]}" for m in self.members)


class FaultyRelay:
    """A data policy for drain.sink.Sink: on a seeded share of DATA commands it drops the
    connection, stalls (shorter or longer than the relay timeout) or answers 4xx/5xx.
    Every answer given is counted; 5xx answers are remembered by first recipient."""

    def __init__(self, seed: int, drop: float = 0.02, soft: float = 0.02, hard: float = 0.005,
                 slow: float = 0.01, tarpit: float = 0.002, tarpit_s: float = 1.5, pace_s: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.shares: Sequence[tuple[str, float]] = (("drop", drop), ("4xx", soft), ("5xx", hard),
                                                   ("stall", slow), ("tarpit", tarpit))
        self.tarpit_s = tarpit_s
        self.pace_s = pace_s  # every accepted message takes this long (workers hold a batch a while)
        self.faults: Counter[str] = Counter()
        self.refused: set[str] = set()  # Message-IDs of messages answered with 5xx
        self.stalled: dict[str, float] = {}  # Message-IDs stalled and then accepted: seconds
        self.lock = threading.Lock()
        self.enabled = True

    def __call__(self, _index: int, msg: Received) -> Action:
        with self.lock:
            if not self.enabled:
                return None
            draw = self.rng.random()
            kind = ""
            for name, share in self.shares:
                if draw < share:
                    kind = name
                    break
                draw -= share
            if kind:
                self.faults[kind] += 1
            if kind == "5xx":
                self.refused.add(msg.message_id)
            stall_s = self.rng.uniform(0.1, 0.5)
            if kind == "stall":
                self.stalled[msg.message_id] = stall_s
        if kind == "drop":
            return DROP
        if kind == "4xx":
            return "451 4.3.0 chaos: try again later"
        if kind == "5xx":
            return "554 5.7.1 chaos: refused for good"
        if kind == "stall":
            return Stall(seconds=stall_s)  # slow, then accepted
        if kind == "tarpit":
            return Stall(seconds=self.tarpit_s, then="451 4.4.2 chaos: too slow")  # past the timeout
        return Stall(seconds=self.pace_s) if self.pace_s > 0 else None


def run_drain(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """`drain ARGS...` as a process with extra environment; its output captured."""
    return subprocess.run([sys.executable, "-m", "drain", *args], capture_output=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, **env}, timeout=timeout, check=False)


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """The error a command printed, which must be one line with no traceback."""
    err = result.stderr.decode()
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err
