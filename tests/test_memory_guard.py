"""The memory guard (issue 16): intake closes while the test redis-server is nearly full, drain's
own error says so (never redis's), accepted mail is kept and delivered, intake reopens by
itself; and drain refuses a Redis that would evict queued mail."""

from __future__ import annotations

import base64
import logging
import random
from collections.abc import Callable, Iterator

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.errors import QueueFull
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import connection, enqueue, keys
from drain.worker.delivery import wire_form
from tests.chaos_kit import one_line
from tests.conftest import wait_for
from tests.test_cli import drain
from tests.test_ingress import StartIngress, connect, ingress, queued_id  # noqa: F401 (fixture)

SIZE = 20_000


def bulky(index: int, size: int = SIZE) -> bytes:
    """A message of about `size` bytes that does not compress (a base64 attachment-like body)."""
    noise = base64.encodebytes(random.Random(index).randbytes(size * 3 // 4))
    return synthetic(index, size=512) + b"\n" + noise


def used(rclient: redis.Redis) -> int:
    return int(rclient.info("memory")["used_memory"])


@pytest.fixture
def maxmemory(rclient: redis.Redis, client: Client) -> Iterator[Callable[[int], int]]:
    """Set the test Redis's maxmemory to `room` bytes above what it uses now; restored after
    (before the books are checked)."""

    def set_room(room: int) -> int:
        limit = used(rclient) + room
        rclient.config_set("maxmemory", limit)
        return limit

    yield set_room
    rclient.config_set("maxmemory", 0)


@pytest.fixture
def policy(rclient: redis.Redis) -> Iterator[Callable[[str], None]]:
    """Set the test Redis's maxmemory-policy; noeviction again after."""
    yield lambda name: rclient.config_set("maxmemory-policy", name)
    rclient.config_set("maxmemory-policy", "noeviction")


def all_stored(rclient: redis.Redis, ids: list[str]) -> bool:
    return all(rclient.hexists(keys.message(i), "raw") for i in ids)


def test_enqueue_refused_with_drains_error_then_reopens_after_delivery(
        client: Client, rclient: redis.Redis, maxmemory: Callable[[int], int], relay: Sink,
        work: Callable[..., bool]) -> None:
    client.memory.recheck_s = 0.0  # read INFO memory at every call: the refusal comes at the line
    limit = maxmemory(2_000_000)
    ids: list[str] = []
    with pytest.raises(QueueFull, match="DRAIN_MAX_MEMORY_FRACTION") as refused:
        for index in range(500):  # 10 MB: far more than the room
            ids.append(client.enqueue(bulky(index)))
    assert 20 < len(ids) < 500
    assert 0.9 * limit <= used(rclient) < limit, "refused by the guard at the line, before Redis itself refuses"
    assert "Traceback" not in str(refused.value) and refused.value.__cause__ is None
    assert all_stored(rclient, ids) and client.store.books().accepted == len(ids)
    with pytest.raises(QueueFull):  # still closed: nothing was freed
        client.enqueue(bulky(999))

    work()  # delivery goes on while intake is closed, and frees the memory
    assert len(relay.messages) == len(ids) and client.store.books().delivered == len(ids)
    wait_for(lambda: client.memory.refusal() is None, what="intake to reopen")
    assert client.enqueue(bulky(1000))
    work()


def test_redis_own_out_of_memory_reply_becomes_queue_full(
        client: Client, rclient: redis.Redis, maxmemory: Callable[[int], int]) -> None:
    client.memory.recheck_s = 3600.0
    assert client.memory.refusal() is None  # read once, then trusted: only Redis itself refuses
    maxmemory(1_000_000)
    ids: list[str] = []
    with pytest.raises(QueueFull) as refused:
        for index in range(500):
            ids.append(client.enqueue(bulky(index)))
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    assert all_stored(rclient, ids) and client.store.books().accepted == len(ids)
    assert client.memory.refusal() is not None, "the refusal made the guard read memory again"


def test_enqueue_many_stopped_part_way_names_the_chunks_it_stored(
        client: Client, rclient: redis.Redis, maxmemory: Callable[[int], int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enqueue, "ENQUEUE_CHUNK", 1000)  # chunks of 5 MB: one or more fit, not all four
    client.memory.recheck_s = 0.0
    maxmemory(8_000_000)
    with pytest.raises(QueueFull) as refused:
        client.enqueue_many(bulky(index, 5_000) for index in range(4000))
    accepted = refused.value.accepted
    assert accepted and len(accepted) % 1000 == 0 and len(accepted) < 4000
    assert all_stored(rclient, accepted) and client.store.books().accepted == len(accepted)


def test_the_memory_check_reads_redis_at_most_once_per_interval(client: Client, rclient: redis.Redis) -> None:
    client.memory.recheck_s = 3600.0
    rclient.config_resetstat()
    for index in range(30):
        client.enqueue(synthetic(index))
    calls = int(rclient.info("commandstats").get("cmdstat_info", {}).get("calls", 0))
    assert calls <= 3  # the guard's one reading, RQ's version check; not one per message


def test_smtp_ingress_answers_452_while_full_and_the_session_goes_on(
        client: Client, rclient: redis.Redis, ingress: StartIngress,  # noqa: F811 (fixture)
        maxmemory: Callable[[int], int]) -> None:
    server = ingress()
    client.memory.recheck_s = 3600.0
    raw = wire_form(bulky(1))
    with connect(server) as smtp:
        smtp.ehlo()
        assert smtp.mail("billing@sender.example.com")[0] == 250  # the guard read: room
        assert smtp.rcpt("user1@example.net")[0] == 250
        rclient.config_set("maxmemory", used(rclient) - 100_000)  # Redis refuses every write now
        code, reply = smtp.data(raw)  # the guard trusts its reading; Redis's own refusal gives the 452
        assert (code, reply[:5]) == (452, b"4.3.1"), reply
        code, reply = smtp.mail("billing@sender.example.com")  # the refusal made the guard read again
        assert (code, reply[:5]) == (452, b"4.3.1"), reply
        assert smtp.noop()[0] == 250  # still connected
        rclient.config_set("maxmemory", 0)
        client.memory.recheck()
        assert smtp.mail("billing@sender.example.com")[0] == 250
        assert smtp.rcpt("user1@example.net")[0] == 250
        code, reply = smtp.data(raw)
        assert code == 250, reply
    assert all_stored(rclient, [queued_id(reply.decode())]) and client.store.books().accepted == 1


def test_drain_refuses_a_redis_that_evicts(settings: Settings, rclient: redis.Redis,
                                           policy: Callable[[str], None]) -> None:
    policy("allkeys-lru")
    result = drain(settings, "status", "--json")
    assert result.returncode != 0 and result.stdout == b""
    err = one_line(result)
    assert "maxmemory-policy" in err and "allkeys-lru" in err and "noeviction" in err, err
    policy("noeviction")
    assert drain(settings, "status", "--json").returncode == 0


def test_the_policy_is_read_from_info_when_config_is_refused(settings: Settings, rclient: redis.Redis,
                                                             redis_server: int,
                                                             policy: Callable[[str], None]) -> None:
    user, password = "drain-memtest", "pw-memtest-1"
    rclient.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", "~*", "&*", "+@all",
                            "-config")
    try:
        url = f"redis://{user}:{password}@127.0.0.1:{redis_server}/0"
        policy("volatile-lru")
        result = drain(settings.with_(redis_url=url), "status")
        assert result.returncode != 0 and "maxmemory-policy 'volatile-lru'" in one_line(result)
    finally:
        rclient.execute_command("ACL", "DELUSER", user)


def test_a_policy_nobody_may_read_is_warned_about_once(rclient: redis.Redis, redis_server: int,
                                                       policy: Callable[[str], None],
                                                       caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = "drain-memtest2", "pw-memtest-2"
    rclient.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", "~*", "+@all",
                            "-config", "-info")
    monkeypatch.setattr(connection, "_policy_checked", set())
    try:
        policy("allkeys-lru")  # unknowable to this user: drain goes on, with a warning
        limited = redis.Redis(port=redis_server, username=user, password=password)
        url = f"redis://{user}:***@127.0.0.1:{redis_server}/0"
        with caplog.at_level(logging.WARNING, logger="drain.store.connection"):
            connection.check_eviction(limited, url)
            connection.check_eviction(limited, url)
        warnings = [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]
        assert len(warnings) == 1 and password not in warnings[0].getMessage()
        limited.close()
    finally:
        rclient.execute_command("ACL", "DELUSER", user)


def test_closed_intake_reopens_only_clearly_under_the_line(rclient: redis.Redis,
                                                          maxmemory: Callable[[int], int]) -> None:
    """Redis's own use dips by tens of KB with no mail moving (client buffers shrink); a guard
    that reopened on such a dip let the next message in right at the line (seen in CI)."""
    from drain.intake.memory import REOPEN_MARGIN, MemoryGuard

    guard = MemoryGuard(rclient, 0.5, recheck_s=0.0)

    def at(share: float) -> None:  # maxmemory set so that what Redis uses now is this share of it
        rclient.config_set("maxmemory", int(used(rclient) / share))

    maxmemory(0)  # (the fixture puts maxmemory back to 0 afterwards)
    at(0.45)
    assert guard.refusal() is None
    at(0.55)
    assert guard.refusal() is not None
    at(0.5 - REOPEN_MARGIN / 2)  # under the line, not clearly: still closed
    assert guard.refusal() is not None
    at(0.45)
    assert guard.refusal() is None
    at(0.5 - REOPEN_MARGIN / 2)  # open, and under the line: stays open
    assert guard.refusal() is None
