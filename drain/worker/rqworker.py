"""The drain worker: an RQ SimpleWorker (no fork per job: jobs are batches) with drain's runtime.

`run()` starts one worker in this process, or a pool of them, which respawns processes
that die. Workers outlive Redis: when it goes away (restart, failover) they log, wait with
backoff and carry on; nothing they hold is lost or left in flight (see drain.resilience).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

import redis
from rq import SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus
from rq.worker_pool import WorkerPool

from drain.settings import Settings
from drain.store import keys
from drain.worker import heap, runtime
from drain.worker.dispatch import JOB_FUNCTION, ensure_tokens
from drain.worker.housekeeping import run_once
from drain.worker.resilience import TROUBLE, wait_for_redis
from drain.worker.retry import redis_backoff

log = logging.getLogger(__name__)
T = TypeVar("T")


class DrainWorker(SimpleWorker):
    """SimpleWorker that installs drain's runtime for its jobs, keeps house while it works,
    and waits for Redis instead of quitting when it goes away."""

    def __init__(self, *args: Any, drain_settings: Settings | None = None, housekeeping: bool = True,
                 **kwargs: Any) -> None:
        # Jobs are always read with the JSON serializer: nothing from Redis is unpickled.
        kwargs["serializer"] = JSONSerializer
        super().__init__(*args, **kwargs)
        # The socket timeout must outlast RQ's blocking dequeue, on every connection the pool
        # holds (see runtime.fit_socket_timeout).
        runtime.fit_socket_timeout(self.connection, self.dequeue_timeout)
        self.drain_settings = drain_settings
        self.housekeeping = housekeeping

    def work(self, *args: Any, **kwargs: Any) -> bool:
        settings = self.drain_settings or Settings.from_env()
        heap.keep_freed_memory()  # batches of large mail: no page faults for memory freed and taken again
        rt = runtime.Runtime.build(self.connection, settings)
        self._patiently(rt.start, housekeeping=self.housekeeping)
        runtime.install(rt)
        try:
            self._patiently(run_once, rt.store, force=True)
            return bool(super().work(*args, **kwargs))
        finally:
            runtime.install(None)
            try:
                rt.stop()
            except TROUBLE as exc:  # leaving while Redis is away: the lease lapses on its own
                log.warning("could not release this worker's lease: Redis: %s", exc)

    def _patiently(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run an RQ or drain step that is safe to repeat, waiting out Redis outages."""
        result: T = redis_backoff()(call, *args, **kwargs)
        return result

    # RQ's loop quits on any error outside its dequeue; these steps wait for Redis instead.

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat (a few writes to the worker's keys, several times a job), sent in one
        round trip when RQ gives no pipeline of its own."""
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
            return

        def beat() -> None:
            with self.connection.pipeline(transaction=False) as pipe:
                SimpleWorker.heartbeat(self, timeout, pipeline=pipe)
                pipe.execute()

        self._patiently(beat)

    def check_for_suspension(self, burst: bool) -> None:
        self._patiently(super().check_for_suspension, burst)

    def run_maintenance_tasks(self) -> None:
        self._patiently(super().run_maintenance_tasks)

    def execute_job(self, job: Any, queue: Any) -> None:
        why = refusal(job)
        if why is not None:
            self._refuse(job, queue, why)
            return
        try:
            super().execute_job(job, queue)
        except TROUBLE as exc:
            # RQ could not record the job's start or end. The batch itself settles whatever
            # it did before it returns (drain.resilience); the job is only a work token.
            log.warning("Redis unavailable around job %s (%s); waiting for it", job.id, exc)
            wait_for_redis(self.connection)

    def _refuse(self, job: Job, queue: Any, why: str) -> None:
        """Fail a job drain did not write, without importing or calling anything it names:
        its callbacks, retries and webhooks are dropped before RQ records the failure."""
        log.error("refused RQ job %s: %s", job.id, why)
        job._success_callback_name = job._failure_callback_name = job._stopped_callback_name = None
        job.retries_left = None
        job.webhooks = []
        execution = self.prepare_execution(job)
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            pipe.execute()
        self.handle_job_failure(job, queue, exc_string=f"refused by drain: {why}", execution=execution)
        self.set_state(WorkerStatus.IDLE)

    def teardown(self) -> None:
        # RQ's stop signal raises StopRequested wherever the main thread is: between a
        # command's send and its reply, that reply stays due on a pooled connection, and
        # the exit's own MULTI read it ("Wrong number of response items"). Idle connections
        # are closed first; the exit opens a fresh one.
        self.connection.connection_pool.disconnect(inuse_connections=False)
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except TROUBLE as exc:
            log.warning("could not record this worker's exit: Redis: %s", exc)


def refusal(job: Job) -> str | None:
    """Why a dequeued job must not run, or None for drain's own batch job. Only its stored
    function name is read: nothing is imported to decide."""
    try:
        name, instance = job.func_name, job.instance
    except Exception as exc:  # data that does not even decode
        return f"unreadable job data ({type(exc).__name__})"
    if name != JOB_FUNCTION or instance is not None:
        shown = ascii(name)[:200]
        return f"function {shown} is not {JOB_FUNCTION}"
    return None


def _run_child(name: str, settings: Settings, burst: bool, logging_level: str) -> None:
    """A pool process: its own connection, built from the settings (works for every URL kind)."""
    from drain.store.connection import connect

    client = connect(settings, check=False)
    wait_for_redis(client)
    worker = DrainWorker([keys.RQ_QUEUE], name=name, connection=client, drain_settings=settings)
    worker.work(burst=burst, logging_level=logging_level, with_scheduler=False)


class DrainPool(WorkerPool):
    """RQ's WorkerPool, with children that connect from drain's settings (Sentinel, TLS, AUTH)
    rather than from a copy of the parent's connection pool."""

    def __init__(self, *args: Any, drain_settings: Settings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drain_settings = drain_settings

    def get_worker_process(self, name: str, burst: bool, _sleep: float = 0,
                           logging_level: str = "INFO") -> BaseProcess:
        process: BaseProcess = get_context("fork").Process(
            target=_run_child, args=(name, self.drain_settings, burst, logging_level),
            name=f"Worker {name} (WorkerPool {self.name})")
        return process


def run(client: redis.Redis, settings: Settings, processes: int = 1, burst: bool = False,
        logging_level: str = "INFO") -> None:
    """Run workers until stopped (or, with burst, until nothing is left to do now)."""
    wait_for_redis(client)
    redis_backoff()(ensure_tokens, client, settings)
    if processes <= 1:
        worker = DrainWorker([keys.RQ_QUEUE], connection=client, drain_settings=settings)
        worker.work(burst=burst, logging_level=logging_level, with_scheduler=False)
        return
    pool = DrainPool(
        [keys.RQ_QUEUE], connection=client, num_workers=processes,
        worker_class=DrainWorker, serializer=JSONSerializer, drain_settings=settings,
    )
    pool.start(burst=burst, logging_level=logging_level)
