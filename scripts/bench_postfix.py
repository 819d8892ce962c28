"""Postfix beside drain in the benchmark: a throwaway loopback-only Postfix instance and a
counting smtp-sink, both started and removed by the bench itself.

The instance lives under a temporary directory (its own config directory, queue directory
and data directory, started with `postfix -c DIR`); the system's Postfix configuration is
neither read nor changed. It listens on 127.0.0.1 only, relays everything to the bench's
sink (`relayhost = [127.0.0.1]:PORT`) and holds every message it receives
(`header_checks = static:HOLD`), so a run can inject a queue first and release it later:
`postsuper -H ALL` and `postqueue -f`, timed until the sink has counted every message.

Needs the Debian package `postfix` and root (Postfix's master runs as root and drops to the
`postfix` user). `missing()` says why Postfix cannot run here, for the report.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from drain.demo.sink import free_port
from drain.message import Envelope
from drain.store import keys

TOOLS = ("postfix", "postconf", "postsuper", "postqueue", "smtp-source", "smtp-sink")
SBIN = (Path("/usr/sbin"), Path("/usr/bin"))
INSTALL_HINT = ('install it: echo "postfix postfix/main_mailer_type select No configuration" | '
                "debconf-set-selections; DEBIAN_FRONTEND=noninteractive apt-get install -y postfix")
_COUNTER = re.compile(rb"mesg=(\d+)")


def tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in SBIN:
        if (folder / name).exists():
            return str(folder / name)
    return None


def missing() -> str | None:
    """Why Postfix cannot be measured on this machine, or None when it can."""
    absent = [name for name in TOOLS if tool(name) is None]
    if absent:
        return f"Postfix is not installed ({', '.join(absent)} not found); {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "Postfix needs root to run its own instance (its master process starts as root)"
    return None


def version() -> str:
    out = subprocess.run([tool("postconf") or "postconf", "-d", "-h", "mail_version"], capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() or "?"


def _run(*cmd: str) -> str:
    """Run a Postfix command; its complaints go to stderr only on a terminal, so say what failed."""
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()[-500:]}")
    return result.stdout


class CountingSink:
    """Postfix's smtp-sink with its running counter (-c) read from its output.

    The counter only grows; `mark()` and `since()` count messages from a moment on.
    """

    name = "Postfix smtp-sink"

    def __init__(self, backlog: int = 1000) -> None:
        self.port = free_port()
        self.backlog = backlog
        self.count = 0
        self._base = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def __enter__(self) -> CountingSink:
        binary = tool("smtp-sink")
        if binary is None:
            raise RuntimeError("smtp-sink not found")
        user = ["-u", "postfix"] if os.geteuid() == 0 else []
        self._proc = subprocess.Popen([binary, *user, "-c", f"127.0.0.1:{self.port}", str(self.backlog)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        _wait_listening(self.port, "smtp-sink", self._proc)
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        tail = b""
        while True:
            chunk = self._proc.stdout.read1(65536)
            if not chunk:
                return
            tail = (tail + chunk)[-64:]
            counts = _COUNTER.findall(tail[: tail.rfind(b"\r") + 1] if b"\r" in tail else b"")
            if counts:
                self.count = int(counts[-1])

    def mark(self) -> None:
        self._base = self.count

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the sink's process has used so far."""
        assert self._proc is not None
        with open(f"/proc/{self._proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def since(self) -> int:
        return self.count - self._base

    def wait_for(self, total: int, started: float, timeout_s: float = 3600.0) -> float:
        """Seconds from `started` (perf_counter) until `total` messages arrived since mark()."""
        while self.since() < total:
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"the sink counted {self.since()} of {total} messages after {timeout_s:g}s")
            time.sleep(0.005)
        return time.perf_counter() - started

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=30)


def _wait_listening(port: int, name: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    import socket

    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                raise RuntimeError(f"{name} did not start listening on 127.0.0.1:{port}") from None
            time.sleep(0.05)


MAIN_CF = """\
# A throwaway instance written by drain's scripts/bench; removed when the bench ends.
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
meta_directory = {meta}
syslog_name = postfix-drainbench
myhostname = drain-bench.localdomain
mydomain = localdomain
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{relay_port}
smtp_dns_support_level = disabled
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtputf8_enable = no
# Everything received is held until the bench releases it.
header_checks = static:HOLD
{log}
"""


class PostfixInstance:
    """A Postfix instance under a temporary directory, listening on 127.0.0.1:`smtpd_port`.

    `log=True` writes Postfix's mail log to maillog in that directory (postlogd costs CPU:
    off for timing, on to find out why a run failed).
    """

    def __init__(self, relay_port: int, log: bool = False) -> None:
        self.relay_port = relay_port
        self.smtpd_port = free_port()
        self.log = log
        self.root = Path(tempfile.mkdtemp(prefix="drain-postfix-"))
        self.config = self.root / "etc"

    def _postfix(self, *args: str) -> str:
        return _run(tool("postfix") or "postfix", "-c", str(self.config), *args)

    def __enter__(self) -> PostfixInstance:
        try:
            self._setup()
            self._postfix("start")
            _wait_listening(self.smtpd_port, "Postfix smtpd")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _setup(self) -> None:
        self.root.chmod(0o755)
        self.config.mkdir()
        (self.root / "spool").mkdir()
        data = self.root / "data"
        data.mkdir()
        shutil.chown(data, "postfix")
        meta = _run(tool("postconf") or "postconf", "-d", "-h", "meta_directory").strip() or "/etc/postfix"
        log = (f"maillog_file = {self.root}/maillog\nmaillog_file_prefixes = {self.root}" if self.log else "")
        (self.config / "main.cf").write_text(MAIN_CF.format(root=self.root, meta=meta, relay_port=self.relay_port,
                                                            log=log))
        # The packaged master.cf with smtpd on our port, and no chroot (the queue is elsewhere).
        lines = []
        for line in (Path(meta) / "master.cf").read_text().splitlines():
            fields = line.split()
            if line[:1].strip() and not line.startswith("#") and len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{self.smtpd_port}"
                fields[4] = "n"
                line = "\t".join(fields)
            lines.append(line)
        (self.config / "master.cf").write_text("\n".join(lines) + "\n")

    def master_pids(self) -> list[int]:
        """The running master's pid (its daemons are its children), or none."""
        pid_file = self.root / "spool" / "pid" / "master.pid"
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        return [int(text.split()[0])] if text else []

    def held(self) -> int:
        return sum(len(files) for _dir, _subdirs, files in os.walk(self.root / "spool" / "hold"))

    def queued(self) -> int:
        spool = self.root / "spool"
        return sum(len(files) for name in ("incoming", "active", "deferred", "hold", "maildrop")
                   for _dir, _subdirs, files in os.walk(spool / name))

    def inject(self, count: int, sessions: int, message: Path | None = None, length: int = 2000,
               sender: str = "billing@sender.example.com", recipient: str = "user@example.com") -> float:
        """smtp-source into this instance's smtpd; seconds until every message got its 250."""
        return smtp_source(self.smtpd_port, count, sessions, message, length, sender, recipient)

    def release(self, sink: CountingSink, count: int, timeout_s: float = 3600.0) -> float:
        """Release the held queue; seconds until the sink has counted `count` more messages."""
        sink.mark()
        started = time.perf_counter()
        _run(tool("postsuper") or "postsuper", "-c", str(self.config), "-H", "ALL")
        _run(tool("postqueue") or "postqueue", "-c", str(self.config), "-f")
        return sink.wait_for(count, started, timeout_s)

    def delete_all(self) -> None:
        _run(tool("postsuper") or "postsuper", "-c", str(self.config), "-d", "ALL")

    def __exit__(self, exc_type: type[BaseException] | None = None, exc: BaseException | None = None,
                 tb: TracebackType | None = None) -> None:
        pid_file = self.root / "spool" / "pid" / "master.pid"
        if pid_file.exists():
            with contextlib.suppress(RuntimeError):
                self._postfix("stop")
            # The master leaves its pid file behind: wait for the process itself.
            pid = int(pid_file.read_text().split()[0] or 0) if pid_file.read_text().strip() else 0
            deadline = time.monotonic() + 30
            while pid and _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        if exc_type is not None and self.log and (self.root / "maillog").exists():
            print((self.root / "maillog").read_text()[-3000:])
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def smtp_source(port: int, count: int, sessions: int, message: Path | None = None, length: int = 2000,
                sender: str = "billing@sender.example.com", recipient: str = "user@example.com") -> float:
    """Postfix's smtp-source: `sessions` parallel sessions, a new connection per message, each
    recipient made unique (-N). It stops at the first reply that is not positive, so a clean
    exit means every message got its 250. Returns seconds."""
    cmd = [tool("smtp-source") or "smtp-source", "-s", str(sessions), "-m", str(count), "-N",
           "-M", "bench.example.com", "-f", sender, "-t", recipient]
    cmd += ["-F", str(message)] if message is not None else ["-l", str(length)]
    started = time.perf_counter()
    result = subprocess.run([*cmd, f"127.0.0.1:{port}"], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"smtp-source failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    return seconds


def stored_recipients(client: Any) -> list[str]:
    """Every recipient of every message drain holds in this Redis (read as JSON, never unpickled)."""
    names = list(client.scan_iter(match=keys.message("*"), count=1000))
    found: list[str] = []
    for start in range(0, len(names), 1000):
        pipe = client.pipeline(transaction=False)
        for name in names[start:start + 1000]:
            pipe.hget(name, "env")
        for env in pipe.execute():
            if env is not None:
                found.extend(Envelope.from_json(env).recipients)
    return found


def all_held(postfix: PostfixInstance, messages: int) -> int:
    """Check that every message that got a 250 is in Postfix's hold queue, then empty it."""
    held = postfix.held()
    if held != messages:
        raise RuntimeError(f"{messages} messages got 250 from Postfix's smtpd, its hold queue has {held}")
    postfix.delete_all()
    return held
