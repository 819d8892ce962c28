"""The enqueue script's calls with two chunks in flight on one connection of their own.

With one chunk in flight, Redis waits for the producer between chunks: while redis-py packs
a chunk's ARGV (a few MB) and the socket carries it, Redis has nothing to run, and while
Redis runs it, the producer's sender waits. Here a chunk is written to the socket before
the reply of the one ahead of it is read, so Redis finds the next chunk waiting when it has
stored one (Redis runs one connection's commands in order).

Order on failure stays that of one chunk at a time: each chunk sent while the one before
is unanswered carries how many chunks of the call must be stored before it (the script
counts them in keys.enqueue_mark, lua/enqueue.lua), so a chunk behind one that failed
stores nothing. (The count expires; a chunk sent once the one before has answered is not
checked, so a slow input does not outlive it.) The ids a caller is told of are those of the chunks whose
reply said stored, in order, with no gap.

New ids are reserved ahead (an INCRBY of drain:seq sent behind each chunk, two chunks'
worth when the wire opens): a command of the producer's own (its INCRBY) would wait for both
chunks in flight to run first, so the next chunk's ARGV could not be started until Redis
was idle again. The ids of a reservation a call does not use are a gap in the ids.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.connection import Connection
from redis.typing import EncodableT

from drain.settings import Settings
from drain.store import eventlog, keys

log = logging.getLogger(__name__)

_pack_command: Callable[[tuple[Any, ...]], Any] | None
try:  # hiredis (redis[hiredis], a declared dependency) packs commands in C
    import hiredis

    _pack_command = hiredis.pack_command
except ImportError:  # pragma: no cover - without it, packed() joins in Python
    _pack_command = None

# The error of a chunk refused because the one ahead of it failed (lua/enqueue.lua).
BEHIND_A_FAILURE = "the chunk before it was not stored"


class Wire:
    """One connection taken from the client's pool for one enqueue call; `push` sends a
    chunk and then reads the reply of the chunk before it."""

    def __init__(self, client: redis.Redis, settings: Settings, script_source: str,
                 keys_of: Callable[[str], list[str]], size: int) -> None:
        self.client, self.settings, self.keys_of, self.size = client, settings, keys_of, size
        self.sha = str(client.script_load(script_source))  # EVALSHA below finds it (two NOSCRIPTs would cross)
        self.mark = keys.enqueue_mark(uuid.uuid4().hex)
        self.numbered = 0
        last = int(client.incrby(keys.SEQ, 2 * size))
        # The first ids of `size` new ids each, reserved for the chunks to come.
        self.ahead: deque[int] = deque([last - 2 * size + 1, last - size + 1])
        self.conn: Connection | None = client.connection_pool.get_connection()
        # Per command sent whose reply is not read: a chunk's ids, or None for a reservation.
        self.flight: deque[list[str] | None] = deque()

    def reserved(self) -> int | None:
        """The first of `size` new ids reserved for the next chunk (None: none is left)."""
        return self.ahead.popleft() if self.ahead else None

    def push(self, lane: str, args: Sequence[EncodableT], ids: list[str]) -> list[str] | None:
        """Send one chunk and a reservation behind it; then the ids of the chunk before it
        once its reply says stored (None if there was none). Its error is raised as the
        script's call would raise it."""
        conn = self._conn()
        done = None
        if self.flight and conn.can_read():  # the chunk before has answered: read it first
            done = self._read()
            self._read()  # its reservation
        self.numbered += 1
        before = str(self.numbered - 1) if self.flight else ""  # the chunk before still unanswered
        ring_keys = [*self.keys_of(lane), self.mark]
        conn.send_packed_command([  # type: ignore[no-untyped-call]
            packed(conn, ("EVALSHA", self.sha, len(ring_keys), *ring_keys, *args, before)),
            packed(conn, ("INCRBY", keys.SEQ, self.size))])
        self.flight += (ids, None)
        if len(self.flight) <= 2:
            return done
        done = self._read()
        self._read()  # its reservation
        return done

    def finish(self) -> list[str] | None:
        """The ids of the last chunk in flight once stored (None when none is in flight)."""
        done = None
        while self.flight:
            done = self._read() or done
        return done

    def settle(self) -> list[str]:
        """After an error or the end: read what is still in flight, then give the connection
        back; the ids of the chunks that stored, in order, up to the first that did not (a
        chunk behind a failed one stores nothing; another error there is logged)."""
        stored: list[str] = []
        failed = False
        try:
            while self.flight and self.conn is not None:
                try:
                    ids = self._read()
                    if ids is not None and not failed:
                        stored += ids
                except redis.ResponseError as exc:
                    failed = True
                    if BEHIND_A_FAILURE not in str(exc):
                        log.warning("enqueue: a chunk sent before the error failed too: %s", exc)
        except redis.RedisError as exc:
            log.warning("enqueue: the reply of a chunk sent before the error is unknown: %s", exc)
            self._drop()
        self.close()
        return stored

    def close(self) -> None:
        if self.conn is None:
            return
        if self.flight:  # replies unread: the connection cannot serve another command
            self._drop()
        else:
            self.client.connection_pool.release(self.conn)
        self.conn = None

    def _conn(self) -> Connection:
        if self.conn is None:
            raise redis.ConnectionError("enqueue: the connection was closed after an error")
        return self.conn

    def _read(self) -> list[str] | None:
        """The reply of the oldest command in flight: a chunk's ids once stored (None for a
        reservation, whose ids go to `ahead`)."""
        conn, ids = self._conn(), self.flight[0]
        try:
            reply = conn.read_response()
        except redis.ResponseError:
            self.flight.popleft()
            if ids is None:
                # A reservation refused: Redis at its maxmemory refuses INCRBY, and the chunk
                # ahead of it may have stored (its ids must not be lost with this error). No
                # ids are reserved; the next chunk reserves its own, and meets the error there.
                return None
            raise
        except BaseException:
            self._drop()
            raise
        self.flight.popleft()
        if ids is None:
            self.ahead.append(int(reply) - self.size + 1)
            return None
        answered(self.client, self.settings, reply)
        return ids

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.disconnect()  # type: ignore[no-untyped-call]
            self.client.connection_pool.release(self.conn)
            self.conn = None


def packed(conn: Connection, args: Sequence[EncodableT]) -> bytes:
    """One command in the protocol's form (RESP), as redis-py would pack it for `conn`:
    by hiredis's packer in one C call where it encodes text as `conn` does (UTF-8, strict),
    else in one join here. redis-py's pack_commands gathers its own buffers around it, ~0.3 µs
    of the producer's (GIL-holding) CPU per message of a chunk more."""
    encoding, errors = conn.encoder.encoding, conn.encoder.encoding_errors
    if _pack_command is not None and encoding.lower() in ("utf-8", "utf8") and errors == "strict":
        try:
            return bytes(_pack_command(tuple(args)))
        except TypeError:  # a type hiredis does not pack: the join below does as redis-py does
            pass
    parts: list[bytes] = [b"*%d\r\n" % len(args)]
    add = parts.append
    data: bytes
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode(encoding, errors)
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:  # bytearray, memoryview, float: as redis-py encodes them
            data = bytes(conn.encoder.encode(arg))  # type: ignore[no-untyped-call]
        add(b"$%d\r\n" % len(data))
        add(data)
        add(b"\r\n")
    return b"".join(parts)


def answered(client: redis.Redis, settings: Settings, reply: Sequence[bytes | str]) -> None:
    """After a chunk stored: the writes that only feed figures and failed are logged (the mail
    is stored), and its events go to DRAIN_EVENT_LOG (the script's {first, last, errors...})."""
    for error in reply[2:]:
        log.error("enqueue: a write that only feeds figures failed (%s); the mail is stored", _text(error))
    if reply[0]:
        eventlog.write_span(client, settings, [_text(reply[0]), _text(reply[1])])


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
