"""RQ jobs as work tokens: each `deliver_batch` job claims up to a batch of ready messages.

Messages live in drain's own ready list, so jobs carry no message data; enough jobs are
kept queued for the ready list (at most `max_tokens`), which `rq info` shows. A move that
makes mail ready goes through `ready_due` or `ready_parked` here, which queue the jobs for
it in the same call; anything else that makes mail ready calls `ensure_tokens` once.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, cast

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from drain.flow import ratelimit
from drain.flow.gate import unpark
from drain.settings import Settings
from drain.store import keys
from drain.store.store import Store
from drain.worker.duewatch import watch_of

JOB_FUNCTION = "workers.jobs.deliver_batch"
# Keep failed batch jobs (a worker killed mid-job, a timeout) for a day, for `rq info`.
FAILURE_TTL_S = 24 * 3600
# A batch job goes on claiming, a batch at a time, while more mail is ready than the jobs
# queued will claim (a big backlog): RQ's cost per job (dequeue, registries, heartbeat, a
# few ms) is then spread over more messages. At most JOB_ROUNDS batches and JOB_SPAN_S
# seconds a job, so what a job reads once (rules, whether lanes run) is read again soon.
JOB_ROUNDS = 10
JOB_SPAN_S = 2.0


# RQ's set of the workers registered for drain's queue (rq.Worker.redis_workers_keys).
WORKERS = f"rq:workers:{keys.RQ_QUEUE}"


def tokens_for(ready: int, workers: int, settings: Settings) -> int:
    """How many batch jobs to keep queued for `ready` messages: enough for every worker
    process to have one (a process runs one job at a time), more only when the backlog is
    beyond what those jobs claim in JOB_ROUNDS batches per lane; never more than one per
    batch ready. Each job costs RQ about twenty round trips to Redis (dequeue, registries,
    heartbeats, its end), so the fewer jobs the backlog is worked in, the less Redis works
    per message; a job goes on claiming while the backlog outgrows the jobs queued (Span)."""
    per_job = settings.batch_size * settings.relay_sessions * JOB_ROUNDS
    return min(math.ceil(ready / settings.batch_size), max(workers, 1, math.ceil(ready / per_job)))


def rq_queue(client: redis.Redis) -> Queue:
    return Queue(keys.RQ_QUEUE, connection=client, serializer=JSONSerializer)


def ensure_tokens(client: redis.Redis, settings: Settings) -> int:
    """Queue batch jobs until there are enough for the ready list; returns how many were added."""
    pipe = _ready_reads(client)
    pipe.get(keys.RATE)
    pipe.smembers(keys.PAUSED_TENANTS)
    pipe.hgetall(keys.TENANT_RATES)
    pipe.smembers(WORKERS)  # (not SCARD: the producer's ACL allows SMEMBERS, a set of a few names)
    paused, lanes, suspect, queued, rate, tenants, rates, workers = pipe.execute()
    ready = sum(int(n) for n in lanes.values()) + int(suspect) - held_by_tenant_pauses(client, tenants, rates)
    # A global rate of 0 holds delivery as a pause does: no work tokens for it.
    if paused or not ready or ratelimit.holds(ratelimit.stored_rate(rate)):
        return 0
    wanted = min(tokens_for(int(ready), len(workers), settings), settings.max_tokens) - int(queued)
    if wanted <= 0:
        return 0
    queue_jobs(client, settings, wanted)
    return wanted


def queue_jobs(client: redis.Redis, settings: Settings, count: int) -> None:
    """Queue `count` batch jobs."""
    rq_queue(client).enqueue_many(
        [
            Queue.prepare_data(
                JOB_FUNCTION,
                timeout=settings.job_timeout_s,
                result_ttl=0,
                failure_ttl=FAILURE_TTL_S,
                description="deliver a batch of ready messages",
            )
            for _ in range(count)
        ]
    )


class Rounds:
    """The batches a job may claim after each lane's first, shared by its lanes: a lane that
    is quicker claims more of them, and the lanes end the job together (rather than one
    working its last rounds alone while the others wait for it)."""

    def __init__(self, extra: int = JOB_ROUNDS - 1) -> None:
        self.extra = extra
        self.lock = threading.Lock()

    def left(self) -> bool:
        return self.extra > 0

    def take(self) -> bool:
        """One more batch for the asking lane, if any is left (`extra` may go below 0)."""
        with self.lock:
            self.extra -= 1
            return self.extra >= 0


# The suspects seen with the last claim's reads of each Redis client: (when sent, any waiting).
_SUSPECTS: weakref.WeakKeyDictionary[redis.Redis, tuple[float, bool]] = weakref.WeakKeyDictionary()


class Span:
    """Whether a batch job's lane that has worked its batch claims another one (see JOB_ROUNDS:
    `rounds`, shared by the job's lanes, holds (JOB_ROUNDS - 1) x lanes more)."""

    def __init__(self, client: redis.Redis, settings: Settings, clock: Callable[[], float] = time.monotonic,
                 rounds: Rounds | None = None) -> None:
        self.client = client
        self.settings = settings
        self.clock = clock
        self.until = clock() + JOB_SPAN_S
        self.rounds = rounds or Rounds()
        # The backlog's reads, when they came with the claim's others (drain.worker.preamble).
        self.read: list[Any] | None = None
        # A job's first claim starts from the suspects its process's last claim saw with its
        # reads, when those were read within JOB_SPAN_S, rather than ask (drain.worker.alone):
        # a job's later claims go by the reads of the claim before, as old as a batch takes.
        last = _SUSPECTS.get(client)
        self.suspects: bool | None = last[1] if last is not None and time.monotonic() - last[0] < JOB_SPAN_S else None
        self.watch = watch_of(client)
        self.asked = 0.0

    def more(self) -> bool:
        """Whether to claim another batch; not while Redis is unavailable (the job ends as before)."""
        if not self.rounds.left() or self.clock() >= self.until:
            return False
        read, self.read = self.read, None
        try:
            if not (beyond_tokens(read, self.settings) if read is not None
                    else backlog_beyond_tokens(self.client, self.settings)):
                return False
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        return self.rounds.take()

    def queue(self, pipe: redis.client.Pipeline) -> int:
        """The backlog's reads, sent with a claim's others (drain.worker.preamble): `more`
        decides from them, read after the claim, rather than ask again when the batch is done;
        with them the soonest deferred message, for the process's housekeeper (DueWatch)."""
        self.asked = time.monotonic()  # before it is sent: the reading is at least this fresh
        pipe.zrange(keys.DEFERRED, 0, 0, withscores=True)
        return _ready_on(pipe) + 1

    def take(self, replies: list[Any]) -> None:
        first, replies = replies[0], replies[1:]
        if not isinstance(first, Exception):
            self.watch.saw(soonest(first), self.asked)
        self.read = None if any(isinstance(r, Exception) for r in replies) else replies
        self.suspects = None if self.read is None else bool(int(cast(int, self.read[2])))
        if self.suspects is not None:
            _SUSPECTS[self.client] = (self.asked, self.suspects)

    def undo(self) -> None:
        self.read = self.suspects = None

    def seen_suspects(self) -> bool | None:
        """Whether suspects were waiting when the last claim's reads were made (None: not
        read since): the next claim's turn (drain.worker.alone) need not ask again."""
        seen, self.suspects = self.suspects, None
        return seen


def soonest(first: object) -> float | None:
    """The due time in a ZRANGE deferred 0 0 WITHSCORES reply (None: nothing deferred)."""
    pairs = cast(list[Any], first)
    return float(pairs[0][1]) if pairs else None


def backlog_beyond_tokens(client: redis.Redis, settings: Settings) -> bool:
    """Whether more mail is ready than the batch jobs queued will claim (one round trip)."""
    return beyond_tokens(_ready_reads(client).execute(), settings)


def beyond_tokens(read: list[object], settings: Settings) -> bool:
    """backlog_beyond_tokens from `_ready_reads`'s replies (read in some other round trip):
    more ready than the queued jobs' first batches (a batch per lane) will claim."""
    paused, lanes, suspect, queued = read
    ready = sum(int(n) for n in cast(dict[bytes, bytes], lanes).values()) + int(cast(int, suspect))
    return not paused and ready > int(cast(int, queued)) * settings.batch_size * settings.relay_sessions


def _ready_reads(client: redis.Redis) -> redis.client.Pipeline:
    """A pipeline reading, in this order: the pause flag, the ready counts by lane, the
    suspects and the batch jobs queued."""
    pipe = client.pipeline(transaction=False)
    _ready_on(pipe)
    return pipe


def _ready_on(pipe: redis.client.Pipeline) -> int:
    pipe.exists(keys.PAUSED)
    pipe.hgetall(keys.READY_COUNT)
    pipe.llen(keys.SUSPECT)
    pipe.llen(f"rq:queue:{keys.RQ_QUEUE}")
    return 4


def held_by_tenant_pauses(client: redis.Redis, tenants: set[bytes], rates: dict[bytes, bytes]) -> int:
    """Ready mail of paused tenants (or held by a rate cap of 0): no batch job is queued for
    it (costs the held tenants). `tenants` and `rates`: the paused tenants and the tenants'
    rates as read (with the rest, in ensure_tokens's one round trip)."""
    paused = {p.decode("utf-8", "replace") for p in tenants}
    paused |= {t.decode("utf-8", "replace") for t, r in rates.items() if ratelimit.holds(ratelimit.stored_rate(r))}
    if not paused:
        return 0
    pipe = client.pipeline(transaction=False)
    for tenant in paused:
        for lane in keys.LANES:
            pipe.llen(keys.lane(lane, tenant))
    return sum(int(n) for n in pipe.execute())


def ready_due(store: Store) -> int:
    """Move deferred mail whose time has come to ready and, when any moved, queue batch jobs
    for it (or it would wait for the next housekeeping round's top-up). Returns how many."""
    moved = store.promote_due()
    if moved:
        ensure_tokens(store.client, store.settings)
    return moved


def ready_parked(store: Store, domain: str) -> int:
    """Move a domain's parked mail back to ready (its pause or its cap of 0 was lifted) and
    queue batch jobs for it. Returns how many moved."""
    moved = unpark(store, domain.lower())
    ensure_tokens(store.client, store.settings)
    return moved
