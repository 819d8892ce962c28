"""Chaos: drain a backlog while worker processes are SIGKILLed at random moments, Redis is
killed and restarted on its append-only file, and the relay drops, stalls and refuses.
The books balance on every sample during the run and exactly afterwards (counted against
the message hashes and parked lists themselves); nothing is lost or left in flight; exactly
the malformed mail ends in quarantine; and every duplicate the relay saw is charged to a
killed worker that held that message, at most DRAIN_SETTLE_EVERY per killed worker.

Small by default (CI); `--chaos-scale 5` (or DRAIN_CHAOS_SCALE=5, or scripts/chaos) for more.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from drain.demo.seeding import DOMAINS, load, synthetic
from drain.demo.sink import Sink
from drain.flow import ratelimit
from drain.intake.api import Client, Submission
from drain.settings import Settings
from drain.store import keys
from tests.chaos_kit import FaultyRelay, Fleet, RedisProc, charge, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

SEED = int(os.environ.get("DRAIN_CHAOS_SEED") or 8)
MESSAGES = 2000  # at scale 1
RATE = 250.0  # messages per second: the run lasts long enough for the chaos to land
# The window the workers run under (they inherit this environment): the bound per kill.
SETTLE_EVERY = int(os.environ.get("DRAIN_SETTLE_EVERY") or Settings.settle_every)
FAR = 10**10


def test_chaos_drain_loses_nothing(tmp_path: Path, chaos_scale: float, chaos_figures: list[str]) -> None:
    rng = random.Random(SEED)
    total = max(200, int(MESSAGES * chaos_scale))
    restarts_wanted = max(1, round(chaos_scale))
    server = RedisProc(tmp_path / "redis").start()
    # Relay timeout 5 s (tarpit 6 s): with 1 s, a paced 250 starved on a loaded machine came
    # after drain had given up, and the retry was a duplicate no kill explains.
    policy = FaultyRelay(SEED, pace_s=0.01, tarpit_s=6)
    sink = Sink(keep=True, data_policy=policy).start()
    settings = Settings(redis_url=server.url, relay=sink.url)
    fleet = Fleet(
        # (DRAIN_LOCAL_JOURNAL: the run's own folder, not ./.drain/journal of the checkout, where
        # the files of the run's last killed workers would stay, another drain's to the next run.)
        env=dict(os.environ, DRAIN_REDIS_URL=server.url, DRAIN_RELAY=sink.url, DRAIN_LEASE_TTL="1",
                 DRAIN_LOCAL_JOURNAL=str(tmp_path / "journal"),
                 DRAIN_BATCH_SIZE="50", DRAIN_RELAY_TIMEOUT="5", DRAIN_RETRY_FIRST="1", DRAIN_RETRY_MAX="3",
                 DRAIN_BREAKER_COOLDOWN="1", DRAIN_BREAKER_MAX="2"),
        folder=tmp_path, processes=2, client=redis.Redis(port=server.port, socket_timeout=5))
    api = Client(redis.Redis(port=server.port), settings)
    samples = 0
    hashes_checked = False
    try:
        # The backlog: good mail with a Message-ID each, and a share of malformed seeds, each
        # with its own headers (envelope from them, as the workers would see it in an incident).
        bad = load("bad")
        items: list[Submission] = []
        expect_bad: set[int] = set()
        mid: dict[int, str] = {}
        kind: dict[int, str] = {}  # the reason each malformed seed is named after
        for i in range(total):
            if rng.random() < 0.02 or i < len(bad):  # every kind at least once
                name, raw = bad[i % len(bad)]
                items.append(Submission(raw))
                expect_bad.add(i)
                kind[i] = name.removesuffix(".eml").replace("_", ".", 1)
            else:
                mid[i] = f"<synthetic-{i}@sender.example.com>"
                items.append(Submission(synthetic(i), recipients=(f"user{i}@{DOMAINS[i % len(DOMAINS)]}",)))
        accepted = api.enqueue_many(items)
        assert not accepted.rejected
        id_of = dict(zip(accepted.ids, range(total), strict=True))
        ratelimit.set_global(api.redis, RATE)

        for _ in range(2):
            fleet.start()
        started = time.monotonic()
        started_at = time.time()
        restart_at = sorted(rng.uniform(0.25, 0.75) for _ in range(restarts_wanted))
        next_kill = started + rng.uniform(1.0, 2.5)

        def done() -> int:
            # Every sample of the books during the run must balance, not only the last one.
            nonlocal samples
            b = api.store.books()
            assert b.balanced, f"books out of balance during the run: {b}"
            samples += 1
            return b.delivered + b.bounced + b.quarantined

        # Chaos until 95 % of the backlog has an end (or time is up).
        while time.monotonic() - started < 60 * max(1.0, chaos_scale):
            try:
                progress = done() / total
            except redis.RedisError:
                progress = 0.0
            if progress >= 0.95:
                break
            if progress >= 0.5 and not hashes_checked:
                # Halfway: stop delivery until nothing is in flight, then count the data itself.
                hashes_checked = True
                ratelimit.pause(api.redis)
                wait_until(lambda: api.store.books().in_flight == 0, 60, "in-flight mail to settle")
                _count_the_data(api)
                ratelimit.resume(api.redis)
                continue
            if restart_at and progress >= restart_at[0]:
                restart_at.pop(0)
                server.restart(down_s=rng.uniform(0.3, 1.5))
                continue
            if time.monotonic() >= next_kill:
                if rng.random() < 0.3:
                    if fleet.kill_member(rng) is not None:
                        fleet.start()
                else:
                    fleet.kill_worker(rng)
                next_kill = time.monotonic() + rng.uniform(1.0, 2.5)
            time.sleep(0.05)  # the chaos loop's own pace
        while restart_at:  # a restart the drain outran still happens, near the end
            restart_at.pop(0)
            server.restart(down_s=0.5)

        # Calm: the relay behaves, deferred mail is due now, workers finish the rest.
        policy.enabled = False
        if not fleet.alive():
            fleet.start()

        def drained() -> bool:
            api.store.promote_due(now=FAR)
            b = api.store.books()
            return b.queued == 0

        wait_until(drained, 120, "the backlog to drain after the chaos")
        books = api.store.books()
        in_flight_before_stop = books.in_flight
    except BaseException:
        print(fleet.logs())
        try:
            print("books:", api.store.books(), "rq queue:", api.redis.llen(f"rq:queue:{keys.RQ_QUEUE}"),
                  "in flight:", api.store.held(), "alive:", len(fleet.alive()))
        except redis.RedisError as exc:
            print("books unavailable:", exc)
        log = server.folder / "redis.log"
        print("redis-server exit code:", server.proc.poll() if server.proc else None, "restarts:", server.restarts)
        print(log.read_text(errors="replace")[-2000:] if log.exists() else "no redis.log")
        raise
    finally:
        fleet.stop()
        sink.stop()

    # The books: every accepted message has an end, and nothing is in flight.
    _count_the_data(api)
    books = api.store.books()
    assert books.balanced, books
    assert books.accepted == total
    assert in_flight_before_stop == 0 and books.in_flight == 0
    assert books.queued == 0
    assert books.delivered + books.bounced + books.quarantined == total

    # Message by message, from the relay's side, by Message-ID.
    copies = Counter(m.message_id for m in sink.messages)
    why = {id_of[i.decode()]: [f["code"] for f in json.loads(api.redis.hget(keys.message(i.decode()), "why") or b"[]")]
           for i in api.redis.zrange(keys.QUARANTINE, 0, -1)}
    reasons = Counter(code for codes in why.values() for code in codes)
    lost = [n for n, m in mid.items() if not (copies[m] or m in policy.refused or n in why)]
    good_quarantined = {n: codes for n, codes in why.items() if n not in expect_bad}
    key_of = {msg_id: mid[n] for msg_id, n in id_of.items() if n in mid}
    after_kills = charge(fleet.kill_log, Counter({m: c for m, c in copies.items() if m in key_of.values()}), key_of)
    # A copy the relay took after a stall that outlasted the relay timeout (on a loaded
    # machine) was, to drain, never answered: retried, as the README says. Nothing else.
    late = {m: n for m, n in after_kills.items() if m in policy.stalled}
    unexplained = {m: n for m, n in after_kills.items() if m not in policy.stalled}
    duplicates = sum(c - 1 for m, c in copies.items() if c > 1)
    poison = reasons.get("poison.crash", 0) + reasons.get("poison.timeout", 0)
    per_kill = [len(k.charged) for k in fleet.kill_log]
    figures = {
        "messages": total, "malformed": len(expect_bad), "kills": fleet.kills, "workers_killed": fleet.workers_killed,
        "kills_holding_mail": sum(1 for k in fleet.kill_log if k.held),
        "held_at_kills": sum(len(k.held) for k in fleet.kill_log),
        "redis_restarts": server.restarts, "faults": sum(policy.faults.values()), **dict(policy.faults),
        "delivered": books.delivered, "bounced": books.bounced, "quarantined": books.quarantined,
        "quarantined_poison": poison, "duplicates": duplicates, "duplicates_per_kill": per_kill,
        "late_relay_duplicates": sum(late.values()),
        "unexplained_duplicates": sum(unexplained.values()), "lost": len(lost), "in_flight": books.in_flight,
        "book_samples": samples, "seconds": round(time.monotonic() - started, 1),
    }
    line = "chaos: " + " ".join(f"{k}={v}".replace(" ", "") for k, v in figures.items())
    chaos_figures.append(line)
    print(line)
    if os.environ.get("DRAIN_CHAOS_OUT"):
        with open(os.environ["DRAIN_CHAOS_OUT"], "a") as out:
            out.write(json.dumps(figures) + "\n")

    assert lost == [], f"lost messages: {lost[:20]}"
    assert server.restarts == restarts_wanted and fleet.kills >= 1
    assert samples >= 20 and hashes_checked
    # Twice only where a worker died between a 250 and its record: each duplicate is charged
    # to a killed worker that held the message, at most one settle interval per worker.
    assert unexplained == {}, (figures, {m: ([round(r.at - started_at, 2) for r in sink.messages if r.message_id == m],
                                             policy.stalled.get(m)) for m in unexplained})
    assert max(per_kill) <= SETTLE_EVERY, figures
    assert any(k.held for k in fleet.kill_log), f"no kill hit a worker holding mail: {figures}"
    # Exactly the malformed mail ends in quarantine: each with a validation reason (or as
    # poison, if workers died holding it), and good mail only as poison.
    assert expect_bad <= set(why), sorted(expect_bad - set(why))
    assert all(set(codes) <= {"poison.crash", "poison.timeout"} for codes in good_quarantined.values()), why
    poisoned = {"poison.crash", "poison.timeout"}
    wrong = {n: why[n] for n in expect_bad if kind[n] not in why[n] and not set(why[n]) <= poisoned}
    assert wrong == {}, wrong
    good_ids = set(mid.values())
    assert [m for m in copies if m not in good_ids] == [], "malformed mail was delivered"
    server.stop()


def _count_the_data(api: Client) -> None:
    """With nothing in flight: the message hashes themselves (SCAN) match the books' queued and
    quarantined counts, and the parked lists' lengths match the parked counter."""
    hashes = sum(1 for _ in api.redis.scan_iter(match=keys.message("*"), count=1000))
    books = api.store.books()
    assert hashes == books.ready + books.deferred + books.in_flight + books.quarantined, (hashes, books)
    parked = sum(int(api.redis.llen(k)) for k in api.redis.scan_iter(match=keys.parked("*"), count=1000))
    assert parked == int(api.redis.hget(keys.BOOKS, "parked") or 0), parked
