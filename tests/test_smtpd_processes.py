"""`drain smtpd --processes N`: real processes on one port, a real Redis, smtplib clients.

Which process served a session is read from its DEBUG log line "session from HOST:PORT in
process PID" (the client knows its own port)."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from drain.demo.sink import free_port
from drain.intake import door as intake
from drain.settings import Settings
from drain.store import body, keys
from drain.worker.delivery import wire_form
from tests.conftest import wait_for
from tests.test_ingress import synthetic

SESSION_LINE = re.compile(rb"session from 127\.0\.0\.1:(\d+) in process (\d+)")


class Pool:
    """A `drain smtpd --processes N` subprocess, its log in a file."""

    def __init__(self, settings: Settings, folder: Path, processes: int, **env: str) -> None:
        self.port = free_port()
        self.log = folder / f"smtpd-{self.port}.log"
        environ = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=settings.relay,
                       DRAIN_SMTPD_SMTPUTF8="true", DRAIN_SMTPD_8BITMIME="true", **env)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "drain", "smtpd", "--listen", f"127.0.0.1:{self.port}",
                 "--processes", str(processes), "--log-level", "DEBUG"],
                env=environ, stdout=subprocess.DEVNULL, stderr=out)
        wait_for(lambda: b"listening on" in self.log.read_bytes() or self.proc.poll() is not None,
                 timeout=30, what="drain smtpd")
        assert self.proc.poll() is None, self.log.read_text()

    def connect(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=20)

    def sessions(self) -> dict[int, int]:
        """Client port -> PID of the process that served the session."""
        return {int(port): int(pid) for port, pid in SESSION_LINE.findall(self.log.read_bytes())}

    def pid_of(self, smtp: smtplib.SMTP) -> int:
        assert smtp.sock is not None
        port = smtp.sock.getsockname()[1]
        wait_for(lambda: port in self.sessions(), what="the session's log line")
        return self.sessions()[port]

    def until_two_processes_served(self, tag: str) -> tuple[set[int], int]:
        """Messages tagged TAG-0, TAG-1, ..., one session each, until two processes answered:
        (their PIDs, messages sent). The kernel picks the process: no order is assumed."""
        pids: set[int] = set()
        deadline = time.monotonic() + 60
        n = 0
        while len(pids) < 2:
            assert time.monotonic() < deadline, f"{n} sessions, all served by {pids}"
            with self.connect() as smtp:
                code, reply = send(smtp, f"{tag}-{n}")
                assert code == 250, reply
                pids.add(self.pid_of(smtp))
            n += 1
        return pids, n

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def pools(settings: Settings, tmp_path: Path) -> Iterator[list[Pool]]:
    started: list[Pool] = []
    yield started
    for pool in started:
        pool.stop()


def message(tag: str) -> bytes:
    return wire_form(synthetic(0).replace(b"synthetic-0@", f"{tag}@".encode()))


def send(smtp: smtplib.SMTP, tag: str) -> tuple[int, str]:
    code, reply = smtp.ehlo_or_helo_if_needed() or (0, b"")
    code, reply = smtp.mail("billing@sender.example.com")
    if code != 250:
        return code, reply.decode()
    code, reply = smtp.rcpt("user@example.org")
    if code != 250:
        return code, reply.decode()
    code, reply = smtp.data(message(tag))
    return code, reply.decode()


def stored_message_ids(rclient: redis.Redis) -> list[str]:
    found = []
    for key in rclient.scan_iter(match=keys.message("*"), count=1000):
        stored = rclient.hget(key, "raw")
        raw = body.unpack(stored) if isinstance(stored, bytes) else None  # large bodies are stored compressed
        if raw is not None and (match := re.search(rb"Message-ID: <([^@>]+)@", raw)):
            found.append(match.group(1).decode())
    return found


def test_several_processes_serve_one_port(settings: Settings, rclient: redis.Redis, tmp_path: Path,
                                          pools: list[Pool]) -> None:
    pool = Pool(settings, tmp_path, processes=3)
    pools.append(pool)
    pids, n = pool.until_two_processes_served("port")
    assert pool.proc.pid not in pids  # the children serve; the parent only watches
    assert sorted(stored_message_ids(rclient)) == sorted(f"port-{i}" for i in range(n))
    assert pool.stop() == 0


def test_a_stuck_process_does_not_stop_the_others(settings: Settings, rclient: redis.Redis, tmp_path: Path,
                                                  pools: list[Pool]) -> None:
    """One child frozen (as by a client flooding it): new sessions are served by the others,
    since every child accepts from the one socket only when it is free to."""
    pool = Pool(settings, tmp_path, processes=3)
    pools.append(pool)
    first = pool.connect()
    frozen = pool.pid_of(first)
    os.kill(frozen, signal.SIGSTOP)
    # kill() returns before the signal takes effect on another core: wait until it is stopped.
    wait_for(lambda: Path(f"/proc/{frozen}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T",
             what="the process stopped")
    try:
        for n in range(20):
            with pool.connect() as smtp:
                code, reply = send(smtp, f"others-{n}")
                assert code == 250, reply
                assert pool.pid_of(smtp) != frozen
    finally:
        os.kill(frozen, signal.SIGCONT)
    code, reply = send(first, "frozen-then-thawed")  # its session goes on
    assert code == 250, reply
    first.quit()
    assert len(stored_message_ids(rclient)) == 21


def test_a_flood_on_one_process_does_not_stop_another_session(settings: Settings, rclient: redis.Redis,
                                                              tmp_path: Path, pools: list[Pool]) -> None:
    pool = Pool(settings, tmp_path, processes=2)
    pools.append(pool)
    flooder = pool.connect()
    flooded = pool.pid_of(flooder)
    other = pool.connect()
    deadline = time.monotonic() + 60
    while pool.pid_of(other) == flooded:  # a session on the other process
        assert time.monotonic() < deadline, "no session reached the other process"
        other.close()
        other = pool.connect()
    done = threading.Event()

    def flood() -> None:  # pipelined NOOPs, as fast as the socket takes them, until told to stop
        assert flooder.sock is not None
        burst = b"NOOP\r\n" * 2000
        try:
            while not done.is_set():
                flooder.sock.sendall(burst)
        except OSError:
            pass

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        for n in range(30):
            code, reply = send(other, f"beside-flood-{n}")
            assert code == 250, reply
            assert thread.is_alive()  # all while the flood went on
    finally:
        done.set()
        flooder.close()
        thread.join(10)
    other.quit()
    assert len(stored_message_ids(rclient)) == 30


def test_sigterm_mid_sessions_loses_nothing_that_got_250(settings: Settings, rclient: redis.Redis, tmp_path: Path,
                                                         pools: list[Pool]) -> None:
    pool = Pool(settings, tmp_path, processes=3)
    pools.append(pool)
    acked: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        n = 0
        try:
            with pool.connect() as smtp:
                while True:
                    tag = f"w{worker}-{n}"
                    code, reply = send(smtp, tag)
                    with lock:
                        (acked if code == 250 else refused).append(tag if code == 250 else reply)
                    if code != 250:
                        return
                    n += 1
        except (smtplib.SMTPException, OSError):
            return

    threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in range(8)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acked) >= 200, timeout=60, what="200 messages accepted")
    pool.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(60)
    assert pool.proc.wait(timeout=60) == 0, pool.log.read_text()[-2000:]
    stored = stored_message_ids(rclient)
    assert len(stored) == len(set(stored)), "a message was stored twice"
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} messages got 250 and are not in Redis"
    unacked = set(stored) - set(acked)
    assert not unacked, f"{len(unacked)} messages stored without a 250 reaching the client"
    assert all("4.3.2" in reply for reply in refused), refused  # 421 shutting down, not an error


def test_a_message_under_way_at_sigterm_is_finished_then_the_session_told(
        settings: Settings, rclient: redis.Redis, tmp_path: Path, pools: list[Pool]) -> None:
    pool = Pool(settings, tmp_path, processes=2)
    pools.append(pool)
    smtp = pool.connect()
    smtp.ehlo()
    assert smtp.mail("billing@sender.example.com")[0] == 250
    assert smtp.rcpt("user@example.org")[0] == 250
    assert smtp.docmd("DATA")[0] == 354
    assert smtp.sock is not None
    raw = message("under-way")
    smtp.sock.sendall(raw[:1000])
    pool.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: pool.log.read_bytes().count(b"stopping (pid") == 2, what="both processes stopping")
    assert b"1 in a transaction" in pool.log.read_bytes()
    smtp.sock.sendall(raw[1000:] + b"\r\n.\r\n")
    code, reply = smtp.getreply()
    assert code == 250, reply
    assert stored_message_ids(rclient) == ["under-way"]
    code, reply = smtp.mail("billing@sender.example.com")  # no new transaction
    assert code == 421 and reply.startswith(b"4.3.2"), reply
    smtp.close()
    assert pool.proc.wait(timeout=60) == 0


def test_intake_pause_is_answered_by_every_process(settings: Settings, rclient: redis.Redis, tmp_path: Path,
                                                  pools: list[Pool]) -> None:
    pool = Pool(settings, tmp_path, processes=2)
    pools.append(pool)
    pool.until_two_processes_served("before-pause")  # both processes have read intake open
    intake.pause(rclient)
    refused_by: set[int] = set()
    deadline = time.monotonic() + 60
    while len(refused_by) < 2:  # each process reads the pause within its second
        assert time.monotonic() < deadline, f"only {refused_by} answered 421"
        with socket.create_connection(("127.0.0.1", pool.port), timeout=20) as sock:
            greeting = sock.makefile("rb").readline()
            port = sock.getsockname()[1]
        if greeting.startswith(b"421 4.3.2"):
            wait_for(lambda p=port: p in pool.sessions(), what="the session's log line")  # type: ignore[misc]
            refused_by.add(pool.sessions()[port])
        else:
            assert greeting.startswith(b"220"), greeting
    intake.resume(rclient)

    def taken() -> bool:  # within the second each process may still answer from what it read
        try:
            with pool.connect() as smtp:
                return send(smtp, "after-resume")[0] == 250
        except smtplib.SMTPConnectError:
            return False

    wait_for(taken, what="mail taken again after resume")


def test_session_cap_counts_across_processes(settings: Settings, rclient: redis.Redis, tmp_path: Path,
                                             pools: list[Pool]) -> None:
    pool = Pool(settings, tmp_path, processes=2, DRAIN_SMTPD_MAX_SESSIONS="4")
    pools.append(pool)
    deadline = time.monotonic() + 60
    while True:  # four open sessions, spread over both processes
        held = [pool.connect() for _ in range(4)]
        if len({pool.pid_of(s) for s in held}) == 2:
            break
        for s in held:
            s.quit()
        assert time.monotonic() < deadline, "sessions never spread over both processes"
    try:
        for _ in range(4):  # whichever process takes it, the fifth is refused
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                pool.connect()
            assert refused.value.smtp_code == 421 and refused.value.smtp_error.startswith(b"4.3.2")
        held.pop().quit()

        def answered() -> bool:
            try:
                held.append(pool.connect())
                return True
            except smtplib.SMTPConnectError:
                return False

        wait_for(answered, what="the freed slot taken again")
    finally:
        for s in held:
            s.close()


def test_auth_failures_count_across_processes(settings: Settings, rclient: redis.Redis, tmp_path: Path,
                                              pools: list[Pool]) -> None:
    pool = Pool(settings, tmp_path, processes=2, DRAIN_SMTPD_AUTH_USER="producer",
                DRAIN_SMTPD_AUTH_PASSWORD="s3cret-Pa55", DRAIN_SMTPD_AUTH_PLAINTEXT="true")
    pools.append(pool)
    key = keys.smtpd_auth_failures("127.0.0.1")
    with pool.connect() as smtp:
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login("producer", "wrong")
    refusals = pool.log.read_bytes().count(b"AUTH refused from")  # smtplib tries more than one mechanism
    assert refusals >= 1
    wait_for(lambda: rclient.get(key) == str(refusals).encode(), what="the failures counted in Redis")
    assert 0 < rclient.ttl(key) <= 600
    rclient.set(key, 10, ex=600)  # as if other processes had seen nine more
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        pool.connect()
    assert refused.value.smtp_code == 421 and refused.value.smtp_error.startswith(b"4.7.0")


def test_a_child_that_dies_is_replaced(settings: Settings, rclient: redis.Redis, tmp_path: Path,
                                       pools: list[Pool]) -> None:
    pool = Pool(settings, tmp_path, processes=2)
    pools.append(pool)
    with pool.connect() as smtp:
        victim = pool.pid_of(smtp)
        os.kill(victim, signal.SIGKILL)
    wait_for(lambda: b"exited with -9; starting another" in pool.log.read_bytes(), what="the restart")
    pids, _n = pool.until_two_processes_served("after-restart")
    assert victim not in pids
    assert pool.stop() == 0


def test_processes_option_refuses_nonsense(settings: Settings) -> None:
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=settings.relay)
    for bad in ("0", "-1", "many"):
        done = subprocess.run([sys.executable, "-m", "drain", "smtpd", "--processes", bad], env=env,
                              capture_output=True, timeout=60, check=False)
        lines = done.stderr.decode().strip().splitlines()
        assert done.returncode == 2 and "--processes" in lines[-1] and "Traceback" not in done.stderr.decode()
