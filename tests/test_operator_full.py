"""`drain status` while Redis is full: the first command the runbook's "Redis is full" entry
gives must answer.

Found by filling a real Redis to its maxmemory: `drain status` failed with "Redis: Command # 1
(HMGET drain:books ...) of pipeline caused error: command not allowed when used memory >
'maxmemory'". Redis refuses to queue any command inside MULTI while it is over its
maxmemory, reads included, and the books were read in MULTI/EXEC."""

from __future__ import annotations

import json

import pytest
import redis

from drain.intake.api import Client
from drain.settings import Settings
from tests.test_cli import drain


def test_status_answers_while_redis_is_over_its_maxmemory(client: Client, rclient: redis.Redis,
                                                          settings: Settings) -> None:
    ids = [client.enqueue(b"From: a@example.com\r\nTo: b@example.org\r\nSubject: s\r\n\r\nbody %d\r\n" % i)
           for i in range(3)]
    used = int(rclient.info("memory")["used_memory"])
    rclient.config_set("maxmemory", max(1, used - 200_000))
    try:
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            rclient.set("drain:operator-test", b"x")  # Redis is refusing writes now
        books = client.store.books()
        assert (books.accepted, books.ready, books.balanced) == (3, 3, True)
        result = drain(settings, "status", "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert (doc["accepted"], doc["ready"]) == (3, 3)
    finally:
        rclient.config_set("maxmemory", 0)
    assert len(ids) == 3


def test_a_write_refused_for_memory_says_what_to_do(client: Client, rclient: redis.Redis,
                                                    settings: Settings) -> None:
    """`drain pause --intake`, the runbook's first step for a full Redis, failed with Redis's own
    "command not allowed when used memory > 'maxmemory'" and nothing on what to do."""
    used = int(rclient.info("memory")["used_memory"])
    rclient.config_set("maxmemory", max(1, used - 200_000))
    try:
        result = drain(settings, "pause", "--intake")
    finally:
        rclient.config_set("maxmemory", 0)
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "maxmemory" in lines[0] and "drain quarantine delete" in lines[0], lines
