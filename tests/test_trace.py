"""Events, `drain trace`, `drain log` and `drain show`, against a real Redis and a real SMTP relay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from drain.cli import cli
from drain.intake.api import Client
from drain.ops.quarantine import Quarantine
from drain.settings import Settings
from drain.store import events, keys, lookup
from drain.store.store import Store
from drain.trace import history, where


def mail(n: int, to: str = "bob@example.org", sender: str = "alice@sender.example.com", mid: str | None = None,
         extra: str = "") -> bytes:
    mid = mid or f"<m{n}@sender.example.com>"
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: invoice {n}\r\nMessage-ID: {mid}\r\n"
            f"Date: Mon, 30 Nov 2026 01:00:00 +0000\r\n{extra}\r\nHello {n}\r\n").encode()


def run(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--redis-url", settings.redis_url or "", *args])


def drain(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`drain ARGS` as a process: its exit code, stdout and stderr as an operator sees them."""
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "")
    return subprocess.run([sys.executable, "-m", "drain", *args], capture_output=True, env=env, timeout=60,
                          check=False)


def traced(client: Client, **q: Any) -> list[dict[str, Any]]:
    return history.trace(client.redis, history.Query(**q), time.time(), client.settings.trace_retention_s)


def names(doc: dict[str, Any]) -> list[str]:
    return [e["event"] for e in doc["events"]]


def test_delivered_first_time_is_found_by_every_selector(client: Client, work: Callable[..., bool],
                                                         settings: Settings) -> None:
    msg_id = client.enqueue(mail(1, to="Bob@Example.org"))
    client.enqueue(mail(2, to="carol@other.example.net"))
    work()
    for q in ({"id": msg_id}, {"recipient": "bob@example.org"}, {"recipient": "@EXAMPLE.org"},
              {"message_id": "m1@sender.example.com"}, {"message_id": "<m1@sender.example.com>"}):
        found = traced(client, **q)
        assert [d["id"] for d in found] == [msg_id], q
    assert len(traced(client, sender="alice@sender.example.com")) == 2
    doc = traced(client, id=msg_id)[0]
    assert names(doc) == ["received", "delivered"]
    assert doc["state"] == "delivered" and doc["message_id"] == "<m1@sender.example.com>"
    assert doc["sender"] == "alice@sender.example.com" and doc["recipients"] == ["Bob@Example.org"]
    received, delivered = doc["events"]
    assert received["source"] == "api" and received["size"] == len(mail(1, to="Bob@Example.org"))
    assert delivered["reply"].startswith("250 ") and delivered["attempt"] == 1 and delivered["delay_s"] >= 0
    result = run(settings, "trace", "--recipient", "bob@example.org", "--json")
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip())
    assert set(line) == {"id", "message_id", "sender", "recipients", "tenant", "state", "events"}
    assert [e["event"] for e in line["events"]] == ["received", "delivered"]
    assert all({"event", "time"} <= set(e) for e in line["events"])


def test_deferred_then_delivered(client: Client, work: Callable[..., bool], store: Store, relay: Any) -> None:
    relay.set_policy(data_policy=lambda n, _m: "451 4.3.0 try later" if n == 0 else None)
    msg_id = client.enqueue(mail(1))
    work()
    store.promote_due(now=time.time() + 10**6)
    work()
    doc = traced(client, id=msg_id)[0]
    assert names(doc) == ["received", "deferred", "delivered"]
    deferred, delivered = doc["events"][1:]
    assert deferred["reply"] == "451 4.3.0 try later" and deferred["attempt"] == 1
    assert deferred["next_attempt"] > deferred["time"]
    assert delivered["attempt"] == 2 and doc["state"] == "delivered"


def test_bounced(client: Client, work: Callable[..., bool], relay: Any) -> None:
    relay.set_policy(data_policy=lambda _n, _m: "554 5.7.1 rejected by policy")
    msg_id = client.enqueue(mail(1))
    work()
    doc = traced(client, id=msg_id)[0]
    assert names(doc) == ["received", "bounced"] and doc["state"] == "bounced"
    assert doc["events"][1]["reply"] == "554 5.7.1 rejected by policy"


def test_quarantined_then_released_then_delivered(client: Client, work: Callable[..., bool], store: Store,
                                                  settings: Settings) -> None:
    raw = (Path(__file__).resolve().parent.parent / "seeds" / "bad" / "header_missing-from.eml").read_bytes()
    msg_id = client.enqueue(raw, sender="alice@sender.example.com", recipients=["bob@example.org"])
    work()
    assert names(traced(client, id=msg_id)[0]) == ["received", "quarantined"]
    assert run(settings, "show", msg_id, "--json").exit_code == 0
    shown = json.loads(run(settings, "show", msg_id, "--json").output)
    assert shown["state"] == "quarantined"
    Quarantine(store).release([msg_id], actor="ops@test", force=True, note="checked by hand")
    work()
    doc = traced(client, id=msg_id)[0]
    assert names(doc) == ["received", "quarantined", "released", "delivered"]
    assert doc["events"][1]["codes"] and doc["events"][2]["actor"] == "ops@test"
    assert doc["events"][2]["reason"] == "checked by hand"


def test_events_agree_with_the_books(client: Client, work: Callable[..., bool], store: Store, relay: Any,
                                     rclient: redis.Redis) -> None:
    relay.set_policy(data_policy=lambda n, _m: "554 5.0.0 no" if n % 5 == 0 else (
        "451 4.0.0 later" if n % 5 == 1 else None))
    bad = (Path(__file__).resolve().parent.parent / "seeds" / "bad" / "header_missing-from.eml").read_bytes()
    client.enqueue_many([mail(i) for i in range(40)] + [bad] * 3)
    work()
    kinds = Counter(d["event"] for d in events.decode_all(rclient.xrange(keys.EVENTS)))
    books = store.books()
    assert kinds["received"] == books.accepted == 43
    assert kinds["delivered"] == books.delivered
    assert kinds["bounced"] == books.bounced
    assert kinds["quarantined"] == books.quarantined == 3
    assert kinds["deferred"] == books.deferred


def test_retention_trims_by_age_and_by_size(client: Client, store: Store, rclient: redis.Redis) -> None:
    old_ms = int((time.time() - 2 * 86400) * 1000)
    for n in range(300):  # whole stream nodes (100 entries each) older than the retention
        rclient.xadd(keys.EVENTS, {"e": "r", "i": f"old{n}", "d": "[]"}, id=f"{old_ms}-{n + 1}")
    short = client.settings.with_(trace_retention_s=86400.0)
    Store(rclient, short).enqueue_many([(mail(1), *_env(), None)])
    assert not [d for d in events.decode_all(rclient.xrange(keys.EVENTS)) if d["id"].startswith("old")]
    ttls = [rclient.ttl(k) for k in rclient.scan_iter(f"{keys.EVENTS}:ix:*")]
    assert ttls and all(0 < t <= 2 * 86400 for t in ttls)
    small = client.settings.with_(trace_max_events=1000)
    Store(rclient, small).enqueue_many([(mail(i), *_env(), None) for i in range(3000)])
    Store(rclient, small).enqueue_many([(mail(1), *_env(), None)])
    assert rclient.xlen(keys.EVENTS) <= 1200


def _env() -> tuple[Any]:
    from drain.message import Envelope
    return (Envelope("alice@sender.example.com", ("bob@example.org",)),)


def _same_bucket(target: str, count: int) -> list[str]:
    bucket = lookup._hashed(events.BY_RECIPIENT + target)[1]
    found, n = [], 0
    while len(found) < count:
        cand = f"user{n}@example.org"
        if lookup._hashed(events.BY_RECIPIENT + cand)[1] == bucket:
            found.append(cand)
        n += 1
    return found


def test_lookup_finds_the_one_message_among_many_in_its_bucket(client: Client, rclient: redis.Redis) -> None:
    target = "bob@example.org"
    neighbours = _same_bucket(target, 30)
    others = [f"x{n}@elsewhere.example.net" for n in range(1500)]
    ids = client.enqueue_many([mail(i, to=r) for i, r in enumerate(neighbours + others)]).ids
    mine = client.enqueue(mail(9999, to=target))
    # A forged record with the target's tag pointing at a neighbour's received event: a tag
    # collision, which the check of the event must throw out.
    spots = lookup.where(rclient, [events.BY_ID + ids[0]], lookup.days(time.time() - 60, time.time()))
    ms, seq = spots[events.BY_ID + ids[0]][0]
    tag, bucket = lookup._hashed(events.BY_RECIPIENT + target)
    day = ms // 86_400_000
    rclient.append(keys.events_index(day, bucket), tag + ((ms - day * 86_400_000) * 8192 + seq).to_bytes(5, "big"))
    assert [d["id"] for d in traced(client, recipient=target)] == [mine]
    assert [d["id"] for d in traced(client, recipient=neighbours[7])] == [ids[7]]


def test_hostile_text_never_reaches_the_terminal(client: Client, work: Callable[..., bool],
                                                 settings: Settings, relay: Any) -> None:
    relay.set_policy(data_policy=lambda _n, _m: "550 5.0.0 \x1b]0;owned\x07 [red]no[/red]")
    msg_id = client.enqueue(mail(1, mid="<\x1b[2J\u202eevil@x>", extra="X-Note: \x1b[31mred\r\n"),
                            sender="a\x1b[5m@x.example.com", recipients=["bob@example.org"])
    work()
    queued = client.enqueue(mail(2, extra="X-Note: \x1b[31mred\x07\r\n"), sender="b\x1b[5m@x.example.com",
                            recipients=["bob@example.org"])
    for args in (["trace", "--id", msg_id], ["log"], ["show", msg_id], ["show", queued]):
        result = run(settings, *args)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\u202e" not in result.output and "\x07" not in result.output
        assert "\\x1b" in result.output
    for args in (["trace", "--id", msg_id, "--json"], ["log", "--json"], ["show", msg_id, "--json"],
                 ["show", queued, "--json"]):
        result = run(settings, *args)
        assert "\x1b" not in result.output
        for line in result.output.splitlines():
            json.loads(line)


def test_bad_input_one_line_and_nothing_changed(client: Client, settings: Settings, rclient: redis.Redis) -> None:
    client.enqueue(mail(1))
    before = rclient.xlen(keys.EVENTS), rclient.llen(keys.FRESH)
    for args, code in ((["show", "ffffff"], 1), (["trace", "--id", "ffffff"], 1),
                       (["trace", "--since", "yesterday-ish"], 2), (["log", "--since", "3x"], 2),
                       (["trace", "--recipient", "@"], 2), (["trace", "--recipient", "nobody@nowhere.test"], 1)):
        result = drain(settings, *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert result.stdout == b"" and len(result.stderr.strip().splitlines()) == 1, args
    assert (rclient.xlen(keys.EVENTS), rclient.llen(keys.FRESH)) == before


def test_show_where_a_queued_message_is(client: Client, settings: Settings, store: Store,
                                        work: Callable[..., bool], relay: Any) -> None:
    msg_id = client.enqueue(mail(1))
    doc = json.loads(run(settings, "show", msg_id, "--json").output)
    assert doc["state"] == "ready" and doc["lane"] == "fresh" and doc["attempts"] == 0
    assert ["Subject", "invoice 1"] in doc["headers"] and doc["message_id"] == "<m1@sender.example.com>"
    assert drain(settings, "show", msg_id, "--raw").stdout == mail(1)
    relay.set_policy(data_policy=lambda _n, _m: "451 4.3.0 later")
    work()
    doc, _raw = where.show(client.redis, msg_id, settings.trace_retention_s)
    assert doc["state"] == "deferred" and doc["due"] > time.time() and doc["last_reply"] == "451 4.3.0 later"
    relay.set_policy()
    store.promote_due(now=time.time() + 10**6)
    work()
    doc, _raw = where.show(client.redis, msg_id, settings.trace_retention_s)
    assert doc["state"] == "delivered" and doc["attempts"] == 2
    gone = drain(settings, "show", msg_id, "--raw")
    assert gone.returncode == 1 and b"no longer kept" in gone.stderr and gone.stdout == b""


def test_event_log_file_and_log_lines(client: Client, work: Callable[..., bool], settings: Settings,
                                      tmp_path: Path, rclient: redis.Redis) -> None:
    path = tmp_path / "events.jsonl"
    logged = Client(client.redis, settings.with_(event_log=str(path)))
    msg_id = logged.enqueue(mail(1))
    work(event_log=str(path))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(x["event"], x["id"]) for x in lines] == [("received", msg_id), ("delivered", msg_id)]
    assert all(x["message_id"] == "<m1@sender.example.com>" for x in lines)  # the delivered line's too
    out = run(settings, "log").output.splitlines()
    assert len(out) == 2 and all(f" {msg_id} <m1@sender.example.com> " in line for line in out)
    js = [json.loads(x) for x in run(settings, "log", "--json").output.splitlines()]
    assert [x["event"] for x in js] == ["received", "delivered"]
    assert all(list(x)[:4] == ["event", "time", "id", "message_id"] for x in js)


def test_events_off_records_nothing(client: Client, work: Callable[..., bool], rclient: redis.Redis,
                                    settings: Settings) -> None:
    off = Client(client.redis, settings.with_(trace=False))
    off.enqueue(mail(1))
    work(trace=False)
    assert rclient.xlen(keys.EVENTS) == 0 and not list(rclient.scan_iter(f"{keys.EVENTS}:ix:*"))


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-30T01:00:00Z", 1796000400.0), ("2026-11-30T02:00:00+01:00", 1796000400.0),
    ("1796000000", 1796000000.0), ("15m", 1796000000.0 - 900), ("2d", 1796000000.0 - 172800)])
def test_times_parse(text: str, expected: float) -> None:
    from drain.trace import when
    assert when.parse(text, now=1796000000.0) == expected


def test_parked_recorded_the_first_time_only(client: Client, work: Callable[..., bool], store: Store,
                                             rclient: redis.Redis, settings: Settings) -> None:
    from drain.flow import gate, ratelimit
    msg_id = client.enqueue(mail(1))
    for _round in range(2):  # parked twice: paused, let go, paused again before it went
        ratelimit.pause_domain(rclient, "example.org")
        work()
        ratelimit.resume_domain(rclient, "example.org")
        assert gate.unpark_all(store) == 1
    work()
    doc = traced(client, id=msg_id)[0]
    assert names(doc) == ["received", "parked", "delivered"] and doc["events"][1]["domain"] == "example.org"
    assert where.show(rclient, msg_id, settings.trace_retention_s)[0]["state"] == "delivered"


def test_expired_is_its_own_event(client: Client, work: Callable[..., bool], relay: Any,
                                  rclient: redis.Redis) -> None:
    relay.set_policy(data_policy=lambda _n, _m: "451 4.3.0 later")
    msg_id = client.enqueue(mail(1))
    rclient.hset(keys.message(msg_id), "t", f"{time.time() - 7200:.3f}")
    work(max_lifetime_s=3600.0)
    doc = traced(client, id=msg_id)[0]
    assert names(doc) == ["received", "expired"] and doc["state"] == "expired"
    assert doc["events"][1]["reply"] == "451 4.3.0 later" and doc["events"][1]["attempt"] == 1


def test_an_event_recorded_in_a_python_transaction_is_atomic_with_it(client: Client, store: Store,
                                                                     rclient: redis.Redis) -> None:
    msg_id = client.enqueue(mail(1))
    pipe = rclient.pipeline(transaction=True)
    pipe.lrem(keys.FRESH, 0, msg_id)
    events.record(pipe, store.scripts, store.settings, [events.Event("D", msg_id, ["ops@test", "spam run"])])
    pipe.delete(keys.message(msg_id))
    pipe.hincrby(keys.BOOKS, "deleted", 1)
    replies = pipe.execute()
    assert replies[1][0]  # the span of the events it recorded
    doc = traced(client, id=msg_id)[0]
    assert names(doc) == ["received", "deleted"] and doc["state"] == "deleted"
    assert doc["events"][1] == {"event": "deleted", "time": doc["events"][1]["time"], "actor": "ops@test",
                                "reason": "spam run"}


def test_log_follow_prints_events_as_they_happen(client: Client, work: Callable[..., bool],
                                                 settings: Settings) -> None:
    first = client.enqueue(mail(1))
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "")
    proc = subprocess.Popen([sys.executable, "-m", "drain", "log", "--follow", "--since", "1h", "--json",
                             "--count", "4"], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        seen = [json.loads(proc.stdout.readline())]  # the event before it started: read with --since
        assert (seen[0]["event"], seen[0]["id"]) == ("received", first)
        work()  # the rest arrive while it follows (XREAD BLOCK)
        second = client.enqueue(mail(2))
        work()
        out, _err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    seen += [json.loads(x) for x in out.splitlines()]
    assert [(x["event"], x["id"]) for x in seen] == [("received", first), ("delivered", first),
                                                     ("received", second), ("delivered", second)]
    assert seen[1]["message_id"] == "<m1@sender.example.com>"


def test_index_records_match_only_whole_records() -> None:
    tag = b"\xaa\xbb\xcc"
    spot = (5 * 8192 + 2).to_bytes(5, "big")
    # The tag's bytes also appear across a record boundary: that is no record of it.
    blob = b"\x00\x00\x00\x00\x00\xaa\xbb\xcc" + b"\x01\x02\x03" + (7 * 8192).to_bytes(5, "big") + tag + spot
    assert lookup.matches(blob, tag, day=1) == [(86_400_000 + 5, 2)]


def test_follow_resumes_where_reading_stopped(client: Client, work: Callable[..., bool],
                                              rclient: redis.Redis) -> None:
    from drain.trace import logview
    msg_id = client.enqueue(mail(1))
    reader = logview.Reader(rclient, client.settings.trace_retention_s)
    assert [d["event"] for d in reader.since(None)] == ["received"]
    work()  # recorded while nobody waits on the stream
    rounds = iter(range(3))
    got = list(reader.follow(lambda: next(rounds, None) is None, block_ms=50))
    assert [(d["event"], d["id"]) for d in got] == [("delivered", msg_id)]


def test_damaged_message_quarantined_with_its_event(client: Client, work: Callable[..., bool],
                                                    rclient: redis.Redis) -> None:
    msg_id = client.enqueue(mail(1))
    rclient.hset(keys.message(msg_id), "n", "not a number")
    work()
    doc = traced(client, id=msg_id)[0]
    assert names(doc) == ["received", "quarantined"] and doc["events"][1]["codes"] == ["store.corrupt"]
