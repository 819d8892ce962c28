"""The drain worker: an RQ SimpleWorker (no fork per job: jobs are batches) with drain's runtime.

`run()` starts one worker in this process, or an RQ WorkerPool of them, which respawns
processes that die.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from rq.worker_pool import WorkerPool

from drain import keys
from drain.dispatch import ensure_tokens
from drain.housekeeping import run_once
from drain.settings import Settings
from workers import runtime

log = logging.getLogger(__name__)


class DrainWorker(SimpleWorker):
    """SimpleWorker that installs drain's runtime for its jobs and keeps house while it works."""

    def __init__(self, *args: Any, drain_settings: Settings | None = None, housekeeping: bool = True,
                 **kwargs: Any) -> None:
        kwargs.setdefault("serializer", JSONSerializer)
        super().__init__(*args, **kwargs)
        self.drain_settings = drain_settings
        self.housekeeping = housekeeping

    def work(self, *args: Any, **kwargs: Any) -> bool:
        settings = self.drain_settings or Settings.from_env()
        rt = runtime.Runtime.build(self.connection, settings)
        rt.start(housekeeping=self.housekeeping)
        runtime.install(rt)
        try:
            run_once(rt.store, force=True)
            return bool(super().work(*args, **kwargs))
        finally:
            runtime.install(None)
            rt.stop()


def run(client: redis.Redis, settings: Settings, processes: int = 1, burst: bool = False,
        logging_level: str = "INFO") -> None:
    """Run workers until stopped (or, with burst, until nothing is left to do now)."""
    ensure_tokens(client, settings)
    if processes <= 1:
        worker = DrainWorker([keys.RQ_QUEUE], connection=client, drain_settings=settings)
        worker.work(burst=burst, logging_level=logging_level, with_scheduler=False)
        return
    pool = WorkerPool(
        [keys.RQ_QUEUE], connection=client, num_workers=processes,
        worker_class=DrainWorker, serializer=JSONSerializer,
    )
    pool.start(burst=burst, logging_level=logging_level)
