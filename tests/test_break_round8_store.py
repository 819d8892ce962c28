"""Round 8's breaks of what Redis holds (see tests/test_break_round8.py): compressed bodies
damaged in Redis, the memory guard. Each docstring says what happened before the fix and the
mutant it catches."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from drain.demo.sink import Sink
from drain.errors import QueueFull
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import body, keys
from tests.conftest import wait_for
from tests.test_body_compression import html_mail, stored
from tests.test_cli import drain
from tests.test_memory_guard import policy

__all__ = ["policy"]  # a fixture of tests.test_memory_guard, used here


def test_releasing_a_damaged_compressed_body_names_the_damage(client: Client, settings: Settings, rclient: redis.Redis,
                                                              relay: Sink, work: Callable[..., bool]) -> None:
    """A held message whose compressed body was damaged in Redis: `drain release` validated the
    stored (compressed) bytes as if they were the message and kept it for "body.nul-byte,
    body.bare-cr-lf, header.non-ascii ...", pointing the operator at the mail instead of the
    store. Now it is kept for store.corrupt, and --force lets the worker quarantine it again as
    corrupt: nothing is delivered. Mutant caught: the problems check in Quarantine.revalidate removed."""
    msg_id = client.enqueue(html_mail(3))
    assert drain(settings, "hold", msg_id).returncode == 0
    rclient.hset(keys.message(msg_id), "raw", stored(rclient, msg_id)[:-40])  # a truncated stream
    result = drain(settings, "release", msg_id)
    out = result.stdout.decode()
    assert "store.corrupt" in out and "nul-byte" not in out, out
    assert rclient.zscore(keys.QUARANTINE, msg_id) is not None
    dry = json.loads(drain(settings, "quarantine", "release", msg_id, "--dry-run", "--json").stdout)
    assert "store.corrupt" in json.dumps(dry), dry
    assert drain(settings, "release", "--force", msg_id).returncode == 0
    work()
    assert relay.messages == []
    assert b"store.corrupt" in (rclient.hget(keys.message(msg_id), "why") or b"")
    assert stored(rclient, msg_id)[:3] == body.MARK  # the evidence is kept as it was


def test_a_policy_set_to_evict_while_running_closes_intake(client: Client, rclient: redis.Redis,
                                                          policy: Callable[[str], None]) -> None:
    """drain refuses an evicting Redis when it connects, but checks once a process: a producer
    (the API, `drain smtpd`) running when someone ran CONFIG SET maxmemory-policy allkeys-lru
    went on taking mail into a Redis that drops queued mail when full. The memory guard reads
    the policy with the memory (same INFO call) and closes intake until it is noeviction again;
    nothing queued is touched. Mutant caught: the policy check in MemoryGuard._read removed."""
    kept = client.enqueue(MAIL)
    policy("allkeys-lru")
    client.memory.recheck()
    with pytest.raises(QueueFull, match="maxmemory-policy 'allkeys-lru'"):
        client.enqueue(MAIL)
    assert client.store.books().accepted == 1 and rclient.hexists(keys.message(kept), "raw")
    policy("noeviction")
    wait_for(lambda: client.memory.refusal() is None, what="intake reopened")
    client.enqueue(MAIL)
    assert client.store.books().accepted == 2


MAIL = b"From: a@src.example\r\nTo: b@dst.example\r\nSubject: one\r\n\r\nhi\r\n"


def test_a_release_that_releases_nothing_exits_1(client: Client, settings: Settings, rclient: redis.Redis,
                                                 work: Callable[..., bool]) -> None:
    """`drain release ID` of a message that still fails validation printed "released 0
    message(s)", "kept ID ..." and exited 0: `drain release ID || alert` took it for done,
    where "0 matched" exits 1. Now exit 1 with a line saying nothing was released (the JSON
    document still printed); --dry-run and a release that released some stay exit 0.
    Mutant caught: none_released never raising."""
    bad = client.enqueue(b"From: a@src.example\r\nTo: b@dst.example\r\n\r\nhi\x00\r\n")
    work()
    for args in (("release", bad), ("quarantine", "release", bad), ("release", bad, "--json"),
                 ("quarantine", "release", bad, "--json")):
        result = drain(settings, *args)
        err = result.stderr.decode()
        assert result.returncode == 1 and "nothing released" in err and len(err.splitlines()) == 1, (args, err)
        if "--json" in args:
            json.loads(result.stdout)
    assert drain(settings, "quarantine", "release", bad, "--dry-run").returncode == 0
    good = client.enqueue(MAIL)
    assert drain(settings, "hold", good).returncode == 0
    both = drain(settings, "quarantine", "release", bad, good)
    assert both.returncode == 0 and b"released 1 message(s)" in both.stdout, both
    assert rclient.zscore(keys.QUARANTINE, bad) is not None


def test_show_raw_of_a_damaged_compressed_body_says_so(client: Client, settings: Settings,
                                                       rclient: redis.Redis) -> None:
    """`drain show --raw ID` of a message whose compressed body was damaged in Redis wrote the
    stored zstd bytes to standard output, exit 0, as if they were the message (`show --json`
    said "damaged", --raw nothing). Now one line naming the damage, exit 1, nothing on
    standard output; an intact one is still written whole. Mutant caught: the damage check
    in the show command removed."""
    msg_id, intact = client.enqueue(html_mail(4)), client.enqueue(html_mail(5))
    rclient.hset(keys.message(msg_id), "raw", stored(rclient, msg_id)[:-40])
    result = drain(settings, "show", "--raw", msg_id)
    err = result.stderr.decode()
    assert result.returncode == 1 and result.stdout == b"" and "damaged in Redis" in err, err
    assert len(err.splitlines()) == 1
    assert drain(settings, "show", "--raw", intact).stdout == html_mail(5)


def test_show_of_a_compressed_message_gives_its_bytes_and_headers(client: Client, settings: Settings,
                                                                 rclient: redis.Redis) -> None:
    """`drain show --raw ID` of any message stored compressed (most mail over 1 KB) wrote its
    size ("48162") instead of its bytes, and `drain show --json` listed no headers: the "sz"
    field was decoded as the body. Mutant caught: record.decode without its STORED_SIZE skip
    (a fetch asking for "sz" got the size as the body)."""
    from drain.store import record

    raw = html_mail(6)
    msg_id = client.enqueue(raw)
    assert stored(rclient, msg_id).startswith(body.MARK)
    assert drain(settings, "show", "--raw", msg_id).stdout == raw
    shown = json.loads(drain(settings, "show", "--json", msg_id).stdout)
    assert ["Subject", "Weekly news 6"] in shown["headers"] and shown["size"] == len(raw)
    [found] = record.fetch(rclient, [msg_id], (record.RAW, record.STORED_SIZE, record.ENVELOPE), size=True)
    assert found is not None and found.raw == raw and found.size == len(raw) and not found.problems
