"""Rate control shared by every worker: global and per-domain rates, concurrency caps,
pauses, fresh mail first, adaptive slow-down, and the operator's drain session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from drain.demo.seeding import synthetic
from drain.demo.sink import Received, Sink, Stall
from drain.flow import adapt, ratelimit
from drain.flow.gate import unpark
from drain.intake.api import Client, Submission
from drain.ops import control
from drain.settings import Settings
from drain.store import keys, tenancy
from tests.conftest import wait_for


@pytest.fixture
def workers(settings: Settings, relay: Sink) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `drain worker` processes (real processes, as in production); all stopped after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(processes: int = 2, **env: str) -> subprocess.Popen[bytes]:
        full = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=relay.url,
                    DRAIN_BATCH_SIZE="20", DRAIN_SETTLE_EVERY="5", DRAIN_LEASE_TTL="2", **env)
        proc = subprocess.Popen([sys.executable, "-m", "drain", "worker", "--processes", str(processes),
                                 "--log-level", "ERROR"], env=full, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in started:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _per_second(times: list[float]) -> int:
    """The most sends in any one-second window."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def _books_settle(client: Client, delivered: int, timeout: float = 60) -> None:
    wait_for(lambda: client.store.books().delivered >= delivered, timeout=timeout, what=f"{delivered} delivered")


def _idle_workers(client: Client) -> int:
    r = client.redis
    return sum(r.hget(key, "state") == b"idle" for key in r.smembers("rq:workers"))


def test_global_rate_holds_across_worker_processes(client: Client, relay: Sink,
                                                   workers: Callable[..., object]) -> None:
    """Two worker processes share one global rate. Counted against the moment the rate was
    set (the workers already running, the mail held by a rate of 0 until then): the k-th
    delivery cannot come before `(k - burst) / rate` seconds after it. A late worker (a loaded
    box) only makes deliveries later, so this holds however slow the box is, and fails when
    the rate is not shared (twice as fast) or not kept at all."""
    rate, total = 100.0, 250
    ratelimit.set_global(client.redis, 0.0)  # held
    client.enqueue_many([synthetic(i) for i in range(total)])
    workers(processes=2)
    wait_for(lambda: _idle_workers(client) >= 2, timeout=60, what="two idle worker processes")
    assert relay.accepted == 0
    started = time.time()
    control.set_rate(client.store, rate)
    _books_settle(client, total)
    times = sorted(m.at for m in relay.messages)
    assert len(times) == total
    allowed = int(rate * Settings().burst_s) + 1  # at once, when the rate is set
    early = [(k, round(t - started, 3)) for k, t in enumerate(times, 1) if t - started < (k - allowed) / rate]
    assert not early, f"deliveries ahead of {rate:g}/s (k-th, seconds after the rate was set): {early[:5]}"


def test_domain_cap_is_never_exceeded_and_other_domains_flow(client: Client, relay: Sink,
                                                             workers: Callable[..., object]) -> None:
    ratelimit.set_domain(client.redis, "slow.example.com", 20.0)
    client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@{'slow' if i % 2 else 'fast'}.example.com",))
                         for i in range(160)])
    workers(processes=2)
    _books_settle(client, 160)
    slow = [m.at for m in relay.messages if m.recipients[0].endswith("@slow.example.com")]
    fast = [m.at for m in relay.messages if m.recipients[0].endswith("@fast.example.com")]
    assert len(slow) == len(fast) == 80
    assert _per_second(slow) <= 20 + max(1, int(20 * Settings().burst_s))
    assert max(fast) < max(slow) - 1.0  # the capped domain did not hold the other back


def test_concurrency_cap_holds(client: Client, relay: Sink, workers: Callable[..., object]) -> None:
    lock = threading.Lock()
    active = {"now": 0, "most": 0}

    def slow_send(_index: int, _msg: Received) -> Stall:
        with lock:
            active["now"] += 1
            active["most"] = max(active["most"], active["now"])
        return Stall(seconds=0.05)

    relay.set_policy(data_policy=slow_send)
    original = relay.handler.handle_DATA

    async def counted(server: object, session: object, envelope: object) -> str:
        try:
            return await original(server, session, envelope)
        finally:
            with lock:
                active["now"] -= 1

    relay.handler.handle_DATA = counted  # type: ignore[method-assign]
    ratelimit.set_concurrency(client.redis, "example.com", 1)
    client.enqueue_many([synthetic(i, domain="example.com") for i in range(30)])
    workers(processes=3)
    _books_settle(client, 30)
    assert active["most"] == 1
    assert client.store.books().balanced


def test_pause_and_resume_take_effect_on_running_workers(client: Client, relay: Sink,
                                                         workers: Callable[..., object]) -> None:
    relay.set_policy(data_policy=lambda _i, _m: Stall(seconds=0.02))
    client.enqueue_many([synthetic(i) for i in range(300)])
    workers(processes=2)
    wait_for(lambda: relay.accepted >= 20, what="deliveries to start")
    ratelimit.pause(client.redis)
    wait_for(lambda: client.store.books().in_flight == 0, what="workers to stop claiming")
    paused_at = client.store.books().delivered
    time.sleep(1.0)  # an observation window: nothing may move while paused
    books = client.store.books()
    assert books.delivered == paused_at and books.ready > 0
    client.enqueue(synthetic(999))  # accepting goes on
    ratelimit.resume(client.redis)
    _books_settle(client, 301)


def test_paused_domain_parks_its_mail_and_resume_brings_it_back(client: Client, relay: Sink,
                                                                 work: Callable[..., bool]) -> None:
    ratelimit.pause_domain(client.redis, "held.example.com")
    client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@{'held' if i < 5 else 'open'}.example.com",))
                         for i in range(10)])
    work()
    books = client.store.books()
    assert (books.delivered, books.ready, books.balanced) == (5, 5, True)
    assert client.redis.llen(keys.parked("held.example.com")) == 5
    shown = ratelimit.show(client.redis)
    assert shown["domains"] == {"held.example.com": {"rate": None, "effective": None, "concurrency": None,
                                                      "paused": True, "held": False}}
    ratelimit.resume_domain(client.redis, "held.example.com")
    assert unpark(client.store, "held.example.com") == 5
    client.enqueue(synthetic(50))
    work()
    assert client.store.books().delivered == 11


def test_unparked_mail_gets_a_batch_job_in_the_same_call(client: Client, relay: Sink,
                                                          work: Callable[..., bool]) -> None:
    from drain.worker.dispatch import ready_parked

    ratelimit.pause_domain(client.redis, "held.example.com")
    client.enqueue_many([Submission(synthetic(i), recipients=("u@held.example.com",)) for i in range(3)])
    work()
    assert client.redis.llen(f"rq:queue:{keys.RQ_QUEUE}") == 0  # parked, no job left for them
    assert ready_parked(client.store, "held.example.com") == 0  # still paused: nothing moves
    ratelimit.resume_domain(client.redis, "held.example.com")
    assert ready_parked(client.store, "HELD.example.com") == 3
    assert client.redis.llen(f"rq:queue:{keys.RQ_QUEUE}") == 1
    work()
    assert client.store.books().delivered == 3


def test_fresh_mail_goes_before_the_backlog(client: Client, relay: Sink, workers: Callable[..., object]) -> None:
    ratelimit.set_global(client.redis, 200.0)
    client.store.enqueue_many(((synthetic(i), _env(i), None) for i in range(2000)), lane="backlog")
    workers(processes=2)
    wait_for(lambda: relay.accepted >= 100, what="the backlog to start draining")
    sent: dict[str, int] = {}  # Message-ID -> messages the relay had taken when it was enqueued
    for n in range(10):
        raw = synthetic(10_000 + n)
        sent[f"<synthetic-{10_000 + n}@sender.example.com>"] = relay.accepted
        client.enqueue(raw)
        time.sleep(0.05)  # producers arriving over time
    wait_for(lambda: all(any(m.message_id == mid for m in relay.messages) for mid in sent),
             what="fresh mail to be delivered")
    order = [m.message_id for m in relay.messages]
    overtaken = [order.index(mid) - before for mid, before in sent.items()]
    books = client.store.books()
    assert books.ready > 500  # the backlog is still far from drained ...
    # ... while fresh mail went ahead of it: only what two workers already held (two claims of
    # 20 each) and the backlog's every-4th claim got to the relay between enqueue and delivery.
    assert max(overtaken) <= 100, overtaken


def _env(i: int) -> object:
    from drain.message import envelope_from_headers

    return envelope_from_headers(synthetic(i))


def test_old_fresh_mail_joins_the_backlog_lane(client: Client) -> None:
    ids = client.enqueue_many([synthetic(i) for i in range(5)]).ids
    assert len(tenancy.ready_ids(client.redis, "fresh")) == 5
    assert client.store.age_fresh(max_age_s=3600) == 0
    assert client.store.age_fresh(max_age_s=0, now=time.time() + 1) == 5
    assert tenancy.ready_ids(client.redis, "backlog") == ids
    assert client.store.books().ready == 5


def test_adaptive_rate_backs_off_and_recovers(client: Client) -> None:
    r = client.redis
    ratelimit.set_domain(r, "busy.example.com", 100.0)
    assert adapt.is_throttling(421, "4.7.0 slow down")
    assert adapt.is_throttling(451, "4.7.1 rate limited, try later")
    assert not adapt.is_throttling(451, "4.3.0 local problem")
    now = 1000.0
    assert adapt.throttled(client.store, "busy.example.com", now) == 50.0
    assert adapt.throttled(client.store, "busy.example.com", now + 0.5) == 50.0  # once a second at most
    assert adapt.throttled(client.store, "busy.example.com", now + 1.5) == 25.0
    assert ratelimit.show(r)["domains"]["busy.example.com"]["effective"] == 25.0  # type: ignore[index]
    assert adapt.recovered(client.store, "busy.example.com", now + 3) == 30.0  # + 5% of the cap
    assert adapt.recovered(client.store, "busy.example.com", now + 3.5) == 30.0
    level: float | None = 30.0
    t = now + 5
    while level is not None:
        level = adapt.recovered(client.store, "busy.example.com", t)
        t += 1.1
    assert ratelimit.show(r)["domains"]["busy.example.com"]["effective"] is None  # type: ignore[index]


def test_adaptive_steps_are_atomic(client: Client) -> None:
    """Workers hearing "slow down" and "ok" for one domain at the same moment: the first step
    wins the second, every other caller sees the rate it set (none applies a step of its own
    on a stale read). Many rounds of eight racing threads, counted, not timed."""
    domain, rounds, racers = "race.example.com", 40, 8
    ratelimit.set_domain(client.redis, domain, 100.0)
    disagreements = 0
    for n in range(rounds):
        client.redis.hset(keys.DOMAIN_EFFECTIVE, domain, "50")
        client.redis.hset(keys.DOMAIN_RAISED, domain, "1")
        now = 100.0 + n
        start = threading.Barrier(racers)
        seen: list[float | None] = []

        def race(i: int, start: threading.Barrier, seen: list[float | None], now: float) -> None:
            start.wait()
            step = adapt.throttled if i % 2 else adapt.recovered
            seen.append(step(client.store, domain, now))

        threads = [threading.Thread(target=race, args=(i, start, seen, now)) for i in range(racers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        final = float(client.redis.hget(keys.DOMAIN_EFFECTIVE, domain) or 0)
        assert final in (25.0, 55.0)
        disagreements += sum(1 for value in seen if value != final)
    assert disagreements == 0


def test_gate_learns_from_each_reply(client: Client) -> None:
    """The gate's feedback: "slow down" halves the domain's rate, success raises it again and
    at the cap the domain stops adapting; failures count on the relay's or the domain's breaker."""
    from drain.flow.breaker import RELAY
    from drain.flow.gate import Gate
    from drain.worker.delivery import Result

    ratelimit.set_domain(client.redis, "busy.example.com", 100.0)
    gate = Gate(client.store)
    gate.refresh()
    now = 1000.0
    gate.heard("busy.example.com", Result("deferred", 421, "4.7.0 slow down"), now)
    assert gate.limits.adaptive == {"busy.example.com"}
    assert client.redis.hget(keys.DOMAIN_EFFECTIVE, "busy.example.com") == b"50"
    gate.heard("busy.example.com", Result("delivered", 250, "ok"), now + 2)
    assert client.redis.hget(keys.DOMAIN_EFFECTIVE, "busy.example.com") == b"55"
    steps = 0
    while "busy.example.com" in gate.limits.adaptive and steps < 20:
        steps += 1
        gate.heard("busy.example.com", Result("delivered", 250, "ok"), now + 2 + 1.1 * steps)
    assert steps == 9 and not client.redis.hexists(keys.DOMAIN_EFFECTIVE, "busy.example.com")
    gate.heard("busy.example.com", Result("deferred", 0, "connection refused"), now)
    gate.heard("busy.example.com", Result("deferred", 451, "4.3.0 try later"), now)
    assert client.redis.hgetall(keys.BREAKER_FAILS) == {RELAY.encode(): b"1", b"busy.example.com": b"1"}


def test_throttling_replies_slow_the_domain_down(client: Client, relay: Sink, work: Callable[..., bool]) -> None:
    relay.set_policy(rcpt_policy=lambda r: "421 4.7.0 too many messages, slow down" if "busy" in r else None)
    client.enqueue_many([synthetic(i, domain="busy.example.com") for i in range(3)])
    work()
    shown = ratelimit.show(client.redis)["domains"]["busy.example.com"]  # type: ignore[index]
    assert 0 < shown["effective"] < adapt.CEILING  # type: ignore[index]


def test_drain_session_runs_until_empty_and_stops_cleanly(client: Client, settings: Settings,
                                                          relay: Sink) -> None:
    from tests.test_cli import drain

    client.enqueue_many([synthetic(i) for i in range(60)])
    result = drain(settings, "drain", "--rate", "unlimited", "--processes", "1",
                   env={"DRAIN_BATCH_SIZE": "10"})
    assert result.returncode == 0, result.stderr
    assert b"balanced" in result.stdout
    assert client.store.books().delivered == 60

    relay.set_policy(data_policy=lambda _i, _m: Stall(seconds=0.05))
    client.enqueue_many([synthetic(i) for i in range(100, 400)])
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "", DRAIN_RELAY=relay.url, DRAIN_BATCH_SIZE="10")
    proc = subprocess.Popen([sys.executable, "-m", "drain", "drain", "--processes", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: relay.accepted >= 80, what="the session to start delivering")
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    proc.wait(timeout=60)
    wait_for(lambda: client.store.books().in_flight == 0, what="nothing left in flight")
    books = client.store.books()
    assert books.balanced and 60 < books.delivered < 360


@pytest.mark.parametrize("processes", [1, 2])
def test_capped_domain_alone_reaches_its_cap(client: Client, relay: Sink, workers: Callable[..., object],
                                             processes: int) -> None:
    """A capped domain with plenty of ready mail is sent at its cap, not a fraction of it:
    counted from the relay's receive times between the first and the last delivery seen.
    A loaded box makes the workers late and loses some of the cap's send times (17/s and,
    at a load of 22 on 2 cores, 12.5/s of 20 were seen with nothing broken), so the bar is
    11/s: a cap kept at half its rate (10/s at best) fails it. That held mail is picked up
    as soon as it comes due, which a 0.9 bar here was for, is counted exactly by the next test."""
    cap, wanted = 20.0, 120
    ratelimit.set_domain(client.redis, "capped.example.com", cap)
    client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@capped.example.com",))
                         for i in range(wanted + 60)])
    workers(processes=processes)
    deadline = time.monotonic() + wanted / cap * 2 + 5
    while len(relay.messages) < wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    times = sorted(m.at for m in relay.messages)
    assert len(times) >= 2 * cap, f"only {len(times)} delivered"
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert achieved >= 0.55 * cap, f"{achieved:.1f}/s delivered against a cap of {cap:g}/s"


def test_held_mail_that_comes_due_gets_a_batch_job_in_the_same_call(client: Client, relay: Sink,
                                                                     work: Callable[..., bool]) -> None:
    """Mail a domain's cap held for a later send time is moved back to ready when its time
    comes, and a batch job is queued for it in the same call: no wait for the next
    housekeeping round's top-up (which cost a capped domain a fifth of its cap)."""
    from drain.worker.dispatch import ready_due

    queue = f"rq:queue:{keys.RQ_QUEUE}"
    ratelimit.set_domain(client.redis, "capped.example.com", 1.0)
    client.enqueue_many([Submission(synthetic(i), recipients=(f"u{i}@capped.example.com",)) for i in range(3)])
    work()  # the first goes now; the next is held for its send time, later than a batch waits
    sent = relay.accepted
    assert 1 <= sent < 3
    assert client.redis.llen(queue) == 0 and client.store.books().ready == 0
    moved: list[int] = []
    wait_for(lambda: bool(moved.append(ready_due(client.store)) or moved[-1]), timeout=10,
             what="the held mail to come due")
    assert client.redis.llen(queue) == 1  # queued by the same call that moved it
    work()
    assert relay.accepted > sent


def _rate_cli(settings: Settings, *args: str) -> str:
    from tests.test_cli import drain

    result = drain(settings, "rate", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


@pytest.mark.parametrize("zero", ["0", "0/s", "0/m"])
def test_rate_zero_holds_delivery_and_only_unlimited_lifts_it(
        zero: str, client: Client, settings: Settings, relay: Sink, work: Callable[..., bool]) -> None:
    import json

    from tests.test_cli import drain

    client.enqueue_many([synthetic(i) for i in range(3)])  # work tokens queued before the hold
    assert "held" in _rate_cli(settings, "set", zero)
    client.enqueue_many([synthetic(i) for i in range(3, 5)])
    work()
    assert relay.accepted == 0
    books = client.store.books()
    assert books.ready == 5 and books.balanced
    shown = json.loads(_rate_cli(settings, "show", "--json"))
    assert shown["global"] == 0.0 and shown["held"] is True
    assert "global: 0 (held)" in _rate_cli(settings, "show")
    status = json.loads(drain(settings, "status", "--json").stdout)
    assert status["delivery_held"] == "rate 0" and status["ready"] == 5 and status["eta_s"] is None

    assert "global: unlimited" in _rate_cli(settings, "set", "unlimited")
    work()
    assert relay.accepted == 5 and client.store.books().queued == 0


def test_domain_rate_zero_holds_that_domain_only(
        client: Client, settings: Settings, relay: Sink, work: Callable[..., bool]) -> None:
    import json

    from tests.test_cli import drain

    assert "held" in _rate_cli(settings, "set", "0/s", "--domain", "Held.Example.COM")
    client.enqueue_many([synthetic(i, domain="held.example.com") for i in range(3)]
                        + [synthetic(i, domain="free.example.com") for i in range(10, 14)])
    work()
    assert sorted(r for m in relay.messages for r in m.recipients) == [f"user{i}@free.example.com"
                                                                        for i in range(10, 14)]
    books = client.store.books()
    assert books.queued == 3 and books.balanced
    shown = json.loads(_rate_cli(settings, "show", "--json"))["domains"]["held.example.com"]
    assert shown["rate"] == 0.0 and shown["held"] is True
    assert "held.example.com: cap 0 (held)" in _rate_cli(settings, "show")
    assert json.loads(drain(settings, "status", "--json").stdout)["domains_held"] == ["held.example.com"]

    _rate_cli(settings, "set", "unlimited", "--domain", "held.example.com")
    work()
    assert relay.accepted == 7 and client.store.books().queued == 0
