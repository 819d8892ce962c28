"""The delivery journal on the worker's own disk: every delivery the relay took is written to
a file of the lane before the lane goes on, so a killed worker process repeats none of them.

A write to Redis costs Redis a wake-up, a socket read and a write, several times what the
journal entry itself costs; written every DRAIN_SETTLE_EVERY deliveries it was a third of
Redis's work per message. A write() to a file the kernel keeps costs Redis nothing, and it
outlives the process: only the machine going down takes it. So, with this journal, each
delivery is appended here at once, and Redis's journal (drain/store/journal.py) is written
every DRAIN_REDIS_JOURNAL_EVERY deliveries: the repeats when a host is lost with its page
cache, the only case this file does not cover.

Each lane has a file (`<token>.journal`) that it holds an exclusive flock on while its
process lives: the kernel drops the lock when the process dies, however it dies. Any worker
process on the host (its housekeeper, every RECOVER_EVERY_S, and at start) takes the lock of
a file nobody holds, copies its entries into the owner's journal in Redis, where the
reaper settles them as delivered before it gives the rest of the claim back (reap.lua),
and deletes the file. The lease (DRAIN_LEASE_TTL) lasts far longer than that round, so the
copy is there before the reaper looks, as long as some worker runs on the host or starts
there within the lease; if none does, the dead process's claim is settled from Redis's
journal alone, as after a host loss. An entry copied twice (it was in Redis already) is
settled once: a settle takes only what its owner's process still holds.

A file holds records: the length of the bytes (4 bytes, big-endian) and the bytes. The first
is the header (MAGIC, the Redis instance's token, the owner); each other is one journal entry
as drain/store/journal.py packs it. A record cut short (a disk that filled) ends the file.
The instance token (keys.INSTANCE) keeps one host's workers of two drains (two Redis, the
same folder) from copying each other's entries into the wrong Redis.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import stat
import struct
import threading
import time
from pathlib import Path

import redis

from drain.settings import Settings
from drain.store import keys
from drain.store.journal import JOURNAL_TTL_S, bundle, sized

log = logging.getLogger(__name__)

MAGIC = b"drain-local-journal 1"
SUFFIX = ".journal"
# How often each worker process looks for files of dead processes (seconds).
RECOVER_EVERY_S = 1.0
# DRAIN_LOCAL_JOURNAL's words for none: those drain's true/false settings take for false.
OFF = frozenset({"off", "false", "no", "0"})
# A file being made (".new", locked until renamed) left by a process that died right then.
STALE_NEW_S = 60.0


def folder(settings: Settings) -> Path | None:
    """Where the lanes' files go: DRAIN_LOCAL_JOURNAL, or HOME/journal; None when it is off
    (`off`, or `false`, `no`, `0`)."""
    value = settings.local_journal.strip()
    if value.lower() in OFF:
        return None
    return Path(value) if value else settings.home / "journal"


def instance(client: redis.Redis) -> bytes:
    """This Redis's token (made by the first worker to ask)."""
    client.set(keys.INSTANCE, secrets.token_hex(8), nx=True)
    token = client.get(keys.INSTANCE)
    return token if isinstance(token, bytes) else b""


def _record(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _header(token: bytes, owner: str) -> bytes:
    return _record(b"\n".join((MAGIC, token, owner.encode("utf-8", "surrogateescape"))))


def _write(fd: int, data: bytes) -> None:
    """Write all of data, or raise: a disk that fills takes what fits and says how much (a
    short write, no error); the record it cut then ends the file, and nothing may follow it."""
    if os.write(fd, data) != len(data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _cut_header(data: bytes) -> bool:
    """Whether data is a file of ours with no whole header: empty (killed between clear's
    truncate and its write, or before the first), or a header record cut short. Anything
    else is another program's (the folder may be shared, carelessly): never deleted."""
    start = data[4:4 + len(MAGIC)]
    return not data or (len(data) > 4 and MAGIC.startswith(start))


def _records(data: bytes) -> list[bytes]:
    return sized(data)[0]


class LocalJournal:
    """The files of one worker process's lanes (one per owner), for one Redis."""

    def __init__(self, where: Path, token: bytes | None = None, client: redis.Redis | None = None) -> None:
        self.where = where
        self._token = token
        self.client = client
        self.files: dict[str, tuple[int, Path]] = {}
        self.lock = threading.Lock()
        self.broken = False
        self.unreadable: set[Path] = set()  # not ours (told once each, not read again)
        self.failed: set[Path] = set()  # the disk or Redis refused them (told once each)
        self.undeletable: set[Path] = set()  # copied, but the disk would not let them go
        # Of each file whose process lives but whose lease lapsed: the bytes copied so far.
        self.copied: dict[Path, int] = {}

    @classmethod
    def open(cls, client: redis.Redis, settings: Settings) -> LocalJournal | None:
        """The process's local journal, or None when it is off or its folder cannot be made
        (logged: Redis's journal alone then bounds the repeats, every DRAIN_SETTLE_EVERY)."""
        where = folder(settings)
        if where is None:
            return None
        try:
            where.mkdir(mode=0o700, parents=True, exist_ok=True)
            found = where.stat()
        except OSError as exc:
            log.warning("no local delivery journal (%s: %s): deliveries are journalled in Redis only",
                        where, exc.strerror)
            return None
        # Whoever may write there could plant entries that count mail as delivered: refused.
        if found.st_uid != os.geteuid() or found.st_mode & 0o022:
            log.warning("no local delivery journal: %s must be a folder of this user that nobody else may "
                        "write to; deliveries are journalled in Redis only", where)
            return None
        try:
            token: bytes | None = instance(client)
        except redis.ResponseError as exc:  # the key damaged (a wrong type): not every worker stopped for it
            log.warning("no local delivery journal: %s cannot be read (%s); deliveries are journalled in Redis "
                        "only", keys.INSTANCE, ascii(str(exc)))
            return None
        except redis.RedisError:
            token = None  # Redis away now: asked for at first use
        return cls(where, token, client)

    @property
    def token(self) -> bytes:
        """The Redis instance's token (keys.INSTANCE), read once."""
        if self._token is None:
            if self.client is None:
                raise ValueError("a local journal needs its Redis token")
            self._token = instance(self.client)
        return self._token

    def _fd(self, owner: str) -> int:
        found = self.files.get(owner)
        if found is not None:
            return found[0]
        name = secrets.token_hex(8)
        new, path = self.where / f"{name}.new", self.where / f"{name}{SUFFIX}"
        fd = os.open(new, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _write(fd, _header(self.token, owner))
            os.rename(new, path)  # seen by the others only once locked and headed
        except BaseException:
            os.close(fd)
            raise
        with self.lock:
            self.files[owner] = (fd, path)
        return fd

    def append(self, owner: str, entries: list[bytes]) -> bool:
        """Write the lane's entries (one write). False when the disk refused (logged once; the
        caller then journals in Redis at once)."""
        if self.broken:
            return False
        try:
            _write(self._fd(owner), b"".join(map(_record, entries)))
        except OSError as exc:
            self._failed(exc)
            return False
        return True

    def clear(self, owner: str) -> None:
        """The lane's entries are all settled in Redis: empty its file."""
        found = self.files.get(owner)
        if found is None or self.broken:
            return
        try:
            os.ftruncate(found[0], 0)
            _write(found[0], _header(self.token, owner))
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        self.broken = True
        log.warning("local delivery journal in %s failed (%s): this process journals deliveries in Redis at once "
                    "from now on", self.where, exc.strerror)

    def close(self) -> None:
        """At a stop: the files of lanes that settled everything go; one still holding
        entries (its last settle failed) is left, unlocked, for recovery to copy."""
        with self.lock:
            files, self.files = self.files, {}
        for owner, (fd, path) in files.items():
            try:
                if os.fstat(fd).st_size <= len(_header(self.token, owner)):
                    path.unlink(missing_ok=True)
            except OSError:
                pass
            finally:
                os.close(fd)

    def recover(self, client: redis.Redis, token_first: bool = False) -> int:
        """Copy the entries of every file whose process is gone (nobody holds its lock) into
        its owner's journal in Redis and delete it; returns how many entries were copied.
        token_first: read the Redis token now even with no file to copy (at a worker's start,
        so that its first delivery asks Redis nothing)."""
        if token_first and not self.token:
            log.warning("Redis gave no instance token: local journal files name no Redis")
        copied = 0
        try:
            names = sorted(os.listdir(self.where))
        except OSError:
            return 0
        for name in names:
            path = self.where / name
            if path in self.undeletable or path in self.unreadable:
                continue  # (copied by this process already; not a journal of ours)
            try:
                if name.endswith(SUFFIX):
                    copied += self._recover_one(client, path)
                elif name.endswith(".new"):
                    self._drop_stale_new(path)
            except OSError as exc:  # the disk failing or gone read-only: told once, the others go on
                self._not_now(path, f"the disk: {exc.strerror}")
            except redis.ResponseError as exc:  # the owner's journal key damaged (a wrong type): the same
                # (Only Redis's own words: redis-py's text of a pipeline's error quotes the entries.)
                self._not_now(path, "Redis: " + ascii(str(exc).rpartition("caused error: ")[2]))
        return copied

    def _recover_one(self, client: redis.Redis, path: Path) -> int:
        try:
            # (O_NONBLOCK: a fifo planted under the name would wait for a writer for ever.)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return 0  # gone already (another process took it), or a link: not ours
        try:
            found = os.fstat(fd)
            if found.st_uid != os.geteuid() or any(path == p for _fd, p in self.files.values()):
                return 0  # (another user's, or this process's own)
            if not stat.S_ISREG(found.st_mode):  # a folder, fifo or device named *.journal
                self._unreadable(path)
                return 0
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                dead = True
            except BlockingIOError:
                dead = False  # its process lives, or is frozen: see _copy
            if dead and not os.path.exists(path):
                return 0  # taken and deleted between our open and our lock
            start = os.pread(fd, 4 + len(MAGIC), 0)
            if start[4:] != MAGIC and not _cut_header(start):  # another program's: not read through
                self._unreadable(path)
                return 0
            with os.fdopen(os.dup(fd), "rb") as handle:
                data = handle.read()
            return self._copy(client, path, data, dead, os.fstat(fd).st_mtime)
        finally:
            os.close(fd)

    def _copy(self, client: redis.Redis, path: Path, data: bytes, dead: bool, mtime: float) -> int:
        """Copy a file's entries into its owner's journal in Redis: all of them, and the file
        deleted, when its process is dead; those not copied yet, the file left, when its
        process holds the lock but its lease lapsed (frozen: stopped, or a paused VM) and the
        reaper may give its claim back any moment."""
        records = _records(data)
        if not records:
            if not _cut_header(data):
                self._unreadable(path)
            elif dead:  # nothing to copy
                path.unlink(missing_ok=True)
            return 0
        head = records[0].split(b"\n", 2)
        if len(head) != 3 or head[0] != MAGIC:
            self._unreadable(path)
            return 0
        if head[1] != self.token:
            # Another drain's (another Redis): its own workers copy it; past a day nobody will.
            if dead and time.time() - mtime > JOURNAL_TTL_S:
                path.unlink(missing_ok=True)
            return 0
        owner, entries = head[2].decode("utf-8", "surrogateescape"), records[1:]
        if not dead:
            if len(data) < self.copied.get(path, 0) or client.exists(keys.lease(owner)):
                self.copied.pop(path, None)  # (emptied since, or alive: nothing to do)
                return 0
            if path in self.copied:
                entries, taken = sized(data[self.copied[path]:])
                self.copied[path] += taken
            else:
                self.copied[path] = sized(data)[1]
        if entries:
            pipe = client.pipeline(transaction=False)
            pipe.rpush(keys.journal(owner), bundle(entries))
            pipe.expire(keys.journal(owner), JOURNAL_TTL_S)
            pipe.execute()
            log.warning("a %s worker's %d deliveries found in its local journal (owner %s, %s): settled as "
                        "delivered, not sent again", "dead" if dead else "frozen", len(entries), ascii(owner), path)
        if dead:
            self.copied.pop(path, None)
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # (a disk remounted read-only): not copied again by this process
                self.undeletable.add(path)
                log.warning("local delivery journal %s was copied but cannot be deleted (%s): left", path,
                            exc.strerror)
        return len(entries)

    def _not_now(self, path: Path, why: str) -> None:
        if path not in self.failed:  # (told once a process; tried again each round)
            self.failed.add(path)
            log.warning("local delivery journal %s not copied (%s): tried again later", path, why)

    def _unreadable(self, path: Path) -> None:
        if path not in self.unreadable:  # (told once a process)
            self.unreadable.add(path)
            log.warning("local delivery journal %s cannot be read: left alone", path)

    def _drop_stale_new(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return
        try:
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid():
                return  # (not one of ours)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if time.time() - found.st_mtime > STALE_NEW_S and _cut_header(os.pread(fd, 4 + len(MAGIC), 0)):
                path.unlink(missing_ok=True)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
