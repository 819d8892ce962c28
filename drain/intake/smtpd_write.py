"""The SMTP ingress's way to Redis: is intake open (Gate), and the batched writes behind the
250 reply to DATA (Committer)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import redis

from drain.intake import door as intake
from drain.intake import rules
from drain.intake.api import Client
from drain.message import Envelope
from drain.worker.dispatch import ensure_tokens

log = logging.getLogger(__name__)

# One Redis transaction carries at most this many messages / bytes.
BATCH_MESSAGES = 500
BATCH_BYTES = 8 * 1024 * 1024

REPLY_PAUSED = "421 4.3.2 drain is not taking mail now (intake paused); try again later"
REPLY_DOWN = "421 4.3.0 drain cannot reach its queue now; try again later"
REPLY_NOT_STORED = "451 4.3.0 message not stored: drain cannot reach its queue; try again later"
REPLY_ERROR = "451 4.3.0 drain hit an internal error; try again later"
REPLY_BUSY = "421 4.3.2 too many SMTP sessions at once; try again later"
REPLY_TOO_MANY_RCPT = "452 4.5.3 Too many recipients"
REPLY_FULL = "452 4.3.1 Insufficient system storage: drain's queue is full; try again later"
REPLY_AUTH_LOCKED = "421 4.7.0 too many failed AUTH attempts; closing"
REPLY_AUTH_BLOCKED = "421 4.7.0 too many failed AUTH attempts from your address; try again later"
REPLY_STOPPING = "421 4.3.2 drain is shutting down; try again later"


class Gate:
    """Is intake open? The pause flag and Redis health, read again at most every `recheck_s`."""

    def __init__(self, client: redis.Redis, executor: ThreadPoolExecutor, recheck_s: float) -> None:
        self._client = client
        self.executor = executor
        self.recheck_s = recheck_s
        self.stopping = False  # set by a graceful stop: new transactions get 421
        self._refusal: str | None = None
        self._checked = float("-inf")

    async def refusal(self) -> str | None:
        """None while intake is open, else the 421 reply to give."""
        if self.stopping:
            return REPLY_STOPPING
        if time.monotonic() - self._checked >= self.recheck_s:
            self._refusal = await asyncio.get_running_loop().run_in_executor(self.executor, self._read)
            self._checked = time.monotonic()
        return self._refusal

    def recheck(self) -> None:
        """Read the state again at the next question (after a failed write)."""
        self._checked = float("-inf")

    def _read(self) -> str | None:
        try:
            return REPLY_PAUSED if intake.is_paused(self._client) else None
        except redis.RedisError as exc:
            log.warning("intake closed: Redis: %s", exc)
            return REPLY_DOWN


_Pending = tuple[bytes, Envelope, "asyncio.Future[str]", str]


class Committer:
    """Writes messages to Redis from worker threads, one transaction for all that arrive together.

    While a write is under way, further DATA completions queue and go in the next one: under
    load one round trip carries many messages, and a lone message waits for nothing.
    """

    def __init__(self, api: Client, executor: ThreadPoolExecutor, writers: int = 2) -> None:
        self._api = api
        self._executor = executor
        self._writers = writers
        self._active = 0
        self._pending: deque[_Pending] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def idle(self) -> bool:
        return not self._pending and self._active == 0

    async def store(self, raw: bytes, envelope: Envelope, source: str = "smtp") -> str:
        """The message's id once Redis holds it; raises what the write raised (RedisError...).
        source is where it came from, for its received event ("smtp CLIENT-ADDRESS")."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()
        self._pending.append((raw, envelope, done, source))
        if self._active < self._writers:
            self._active += 1
            task = loop.create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._take()
                try:
                    ids = await loop.run_in_executor(self._executor, self._write, [(r, e) for r, e, _d, _s in batch],
                                                     [s for _r, _e, _d, s in batch])
                except Exception as exc:
                    for _r, _e, done, _s in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for (_r, _e, done, _s), msg_id in zip(batch, ids, strict=True):
                    if not done.done():
                        done.set_result(msg_id)
        finally:
            self._active -= 1

    def _take(self) -> list[_Pending]:
        batch = [self._pending.popleft()]
        size = len(batch[0][0])
        while (self._pending and len(batch) < BATCH_MESSAGES
               and size + len(self._pending[0][0]) <= BATCH_BYTES):
            batch.append(self._pending.popleft())
            size += len(batch[-1][0])
        return batch

    def _write(self, items: list[tuple[bytes, Envelope]], sources: list[str]) -> list[str]:
        active = rules.load(self._api.redis)
        self._api.memory.check()  # QueueFull: 452
        with self._api.memory.translating():
            ids = self._api.store.enqueue_many(
                ((raw, env, rule.findings() if (rule := rules.first_match(active, raw, env)) else None)
                 for raw, env in items), source=sources)
        self._api.durable.confirm()  # the 250 waits for fsync or replicas when configured
        try:
            ensure_tokens(self._api.redis, self._api.settings)
        except redis.RedisError as exc:  # stored all the same; housekeeping tops jobs up
            log.warning("stored %d message(s) but queued no batch job: Redis: %s", len(ids), exc)
        return ids

