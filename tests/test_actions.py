"""Actions on queued mail (flush, bounce, delete, hold, release) on mail in every state, with
the books balanced after each; dry runs; refusals; timed pauses; the audit log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import redis

from drain.demo.seeding import synthetic
from drain.demo.sink import Sink
from drain.intake.api import Client
from drain.ops import actions, control, pauses
from drain.ops.select import Selector, parse_duration
from drain.settings import Settings
from drain.store import events, keys
from drain.store.books import Books
from drain.store.store import Outcome
from tests.chaos_kit import one_line
from tests.test_cli import drain

# One destination domain per state, so a test can pick a state's mail by --domain too.
DOMAINS = {"ready": "ready.example.org", "suspect": "suspect.example.org", "deferred": "deferred.example.org",
           "held": "held.example.org", "parked": "parked.example.org", "quarantined": "quarantine.example.org",
           "in_flight": "flight.example.org"}


@dataclass
class World:
    """Mail in every state: ids by state ("suspect" is on the suspect list: ready too), and
    each id's one recipient (to find it at the relay)."""

    ids: dict[str, list[str]]
    rcpt: dict[str, str]


def _put(client: Client, world: World, state: str, count: int, lane: str = "fresh", broken: bool = False) -> list[str]:
    start = len(world.rcpt)
    raws = [synthetic(start + n, domain=DOMAINS[state]) for n in range(count)]
    if broken:
        raws = [raw.replace(b"Thank you", b"Thank\x00you", 1) for raw in raws]
    ids = client.enqueue_many(raws, lane=lane).ids
    for n, msg_id in enumerate(ids):
        world.rcpt[msg_id] = f"user{start + n}@{DOMAINS[state]}"
    world.ids.setdefault(state, []).extend(ids)
    return ids


def build_world(client: Client, relay: Sink, work: Callable[..., bool]) -> World:
    """Parked (domain paused), deferred (4xx), held (breaker open), quarantined (a NUL byte),
    then one in flight (claimed by a live owner), one suspect (its owner died), and ready mail
    on both lanes."""
    r = client.redis
    world = World({}, {})
    control.pause(client.store, DOMAINS["parked"])
    relay.set_policy(rcpt_policy=lambda a: "451 4.3.0 try later" if a.endswith(DOMAINS["deferred"]) else None)
    r.hset(keys.BREAKER_OPEN, DOMAINS["held"], f"{time.time() + 3600:.3f}")
    _put(client, world, "parked", 2)
    _put(client, world, "deferred", 2)
    _put(client, world, "held", 2)
    _put(client, world, "quarantined", 1, broken=True)
    work()
    _put(client, world, "in_flight", 1)
    assert client.store.claim("busy-worker", 1).ids == world.ids["in_flight"]
    r.pexpire(keys.lease("busy-worker"), 600_000)
    _put(client, world, "suspect", 1)
    assert client.store.claim("dead-worker", 1).ids == world.ids["suspect"]
    r.delete(keys.lease("dead-worker"))
    assert client.store.reap_dead() == (1, 0)
    _put(client, world, "ready", 2)
    _put(client, world, "ready", 1, lane="backlog")
    books = client.store.books()
    assert (books.ready, books.deferred, books.in_flight, books.quarantined) == (3 + 1 + 2, 4, 1, 1), books
    assert r.zcard(keys.HELD_BREAKER) == 2 and r.llen(keys.parked(DOMAINS["parked"])) == 2
    return world


def drain_rest(client: Client, relay: Sink, work: Callable[..., bool]) -> set[str]:
    """Let everything go that can (the domain resumed, the breaker closed, the relay fine,
    deferred mail due); returns the recipients the relay got."""
    relay.set_policy()
    client.redis.delete(keys.BREAKER_OPEN)
    control.resume(client.store, DOMAINS["parked"])
    client.store.promote_due(now=time.time() + 10**6)
    control.top_up(client.store)
    work()
    return {r for m in relay.messages for r in m.recipients}


@pytest.fixture
def world(client: Client, relay: Sink, work: Callable[..., bool]) -> World:
    return build_world(client, relay, work)


def _state_ids(world: World, state: str) -> list[str]:
    return world.ids[state] + (world.ids["suspect"] if state == "ready" else [])


# (action, state): what the books show after. Each moves every message of the state.
CASES = [(a, s) for a in ("delete", "bounce") for s in ("ready", "deferred", "held", "parked", "quarantined")]
CASES += [("hold", s) for s in ("ready", "deferred", "held", "parked")] + [("flush", "deferred"), ("flush", "held")]


def _moved_to(action: str, before: Books, after: Books, n: int, state: str) -> None:
    counter = {"delete": "deleted", "bounce": "bounced", "hold": "quarantined", "flush": "ready"}[action]
    assert getattr(after, counter) - getattr(before, counter) == n, (before, after)
    source = {"ready": "ready", "parked": "ready", "deferred": "deferred", "held": "deferred",
              "quarantined": "quarantined"}[state]
    if source != counter:
        assert getattr(before, source) - getattr(after, source) == n, (before, after)
    assert after.accepted == before.accepted and after.balanced


def _shape_total(r: redis.Redis) -> int:
    return sum(int(v) for v in r.hvals(keys.SHAPE))


@pytest.mark.parametrize(("action", "state"), CASES)
def test_each_action_on_mail_in_each_state(client: Client, relay: Sink, work: Callable[..., bool], world: World,
                                           action: str, state: str) -> None:
    r = client.redis
    wanted = _state_ids(world, state)
    before = client.store.books()
    sel = Selector(states=(state,)) if state == "ready" else Selector(domain=DOMAINS[state], states=(state,))
    done = actions.run(client.store, action, sel, reason="test")
    assert sorted(done.ids) == sorted(wanted) and done.moved == len(wanted)
    after = client.store.books()
    _moved_to(action, before, after, len(wanted), state)
    assert _shape_total(r) == after.queued  # the backlog shape keeps counting what is queued
    if action != "flush":
        assert actions.run(client.store, action, sel, dry_run=True).ids == []  # gone from where it was
    assert not any(r.zscore(k, i) is not None for k in (keys.HELD_RATE, keys.HELD_BREAKER) for i in wanted)
    if action == "hold":
        q = r.zrange(keys.QUARANTINE, 0, -1)
        assert {i.encode() for i in wanted} <= set(q)
    got = drain_rest(client, relay, work)
    books = client.store.books()
    assert books.balanced and books.in_flight == 1
    acted = {world.rcpt[i] for i in wanted}
    if action == "flush":
        assert acted <= got  # due at once, and delivered
    else:
        assert not acted & got  # deleted, bounced or held mail never reaches the relay
    others = {world.rcpt[i] for s, ids in world.ids.items() if s not in ("in_flight", "quarantined") for i in ids}
    assert others - acted <= got  # the rest still flows, each message once
    assert len([m for m in relay.messages if m.sender]) == len(got)


def _snapshot(r: redis.Redis) -> dict[bytes, bytes | None]:
    return {k: r.dump(k) for k in sorted(r.keys("drain:*"))}


def test_dry_run_changes_nothing_and_lists_what_would_move(client: Client, relay: Sink, world: World,
                                                           settings: Settings) -> None:
    before = _snapshot(client.redis)
    for action in ("delete", "bounce", "hold", "flush"):
        result = drain(settings, action, "--all", "--dry-run", "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        allowed = actions.ALLOWED[action]
        expected = {i for s in allowed for i in _state_ids(world, s)}
        assert set(doc["ids"]) == expected and doc["matched"] == len(expected) and doc["dry_run"] is True
        assert doc["moved"] == 0
    assert _snapshot(client.redis) == before


def test_no_selector_is_refused_and_nothing_changes(client: Client, world: World, settings: Settings) -> None:
    before = _snapshot(client.redis)
    for action in ("bounce", "delete", "flush", "hold", "release"):
        result = drain(settings, action)
        assert result.returncode == 2, result.stderr
        assert "--all" in one_line(result) and result.stdout == b""
    assert _snapshot(client.redis) == before


def test_bad_input_is_one_line_nonzero_and_changes_nothing(client: Client, world: World, settings: Settings) -> None:
    before = _snapshot(client.redis)
    unknown = drain(settings, "delete", "ffffff", world.ids["ready"][0])
    assert unknown.returncode == 1 and "unknown id: ffffff" in one_line(unknown)
    for args in (("delete", "--older-than", "5x"), ("bounce", "--older-than", "-1h", "--all"),
                 ("pause", "--for", "soon"), ("audit", "--since", "yesterday-ish")):
        result = drain(settings, *args)
        assert result.returncode == 2 and one_line(result), (args, result.stderr)
    nothing = drain(settings, "bounce", "--sender", "nobody@nowhere.example.org")
    assert nothing.returncode == 1 and "0 matched" in one_line(nothing)
    busy = drain(settings, "delete", *world.ids["in_flight"])
    assert busy.returncode == 1 and "in flight" in one_line(busy)
    wrong_state = drain(settings, "flush", *world.ids["ready"][:1])
    assert wrong_state.returncode == 1 and "0 matched" in one_line(wrong_state)
    assert _snapshot(client.redis) == before


def test_nothing_matched_with_json_still_prints_the_document(client: Client, world: World,
                                                              settings: Settings) -> None:
    """CONTRACT: `--json` prints {"matched", "ids", "dry_run"}; with nothing matched the exit is 1
    and stderr says so, and a script reading stdout gets the document (it got nothing).
    Mutant caught: the emit before the error removed."""
    for args in (("bounce", "--sender", "nobody@nowhere.example.org"),
                 ("delete", "--dry-run", "--domain", "no.example")):
        result = drain(settings, *args, "--json")
        assert result.returncode == 1 and "0 matched" in one_line(result), result.stderr
        doc = json.loads(result.stdout)
        assert doc["matched"] == 0 and doc["ids"] == [] and doc["dry_run"] == ("--dry-run" in args), doc


def test_in_flight_mail_is_left_to_its_worker(client: Client, world: World) -> None:
    done = actions.run(client.store, "delete", Selector(sender="*@sender.example.com", states=("ready",)))
    assert done.in_flight == world.ids["in_flight"]
    assert world.ids["in_flight"][0] not in done.ids
    assert client.store.books().in_flight == 1 and client.redis.hexists(keys.INFLIGHT, world.ids["in_flight"][0])


def test_a_message_that_moved_since_it_was_found_is_skipped(client: Client, world: World) -> None:
    """act.lua checks each place again: mail in flight, or elsewhere than the caller saw it, stays."""
    store = client.store
    stale = [(world.ids["in_flight"][0], "l"), (world.ids["deferred"][0], "l"), (world.ids["ready"][0], "d"),
             (world.ids["ready"][0], "q"), (world.ids["quarantined"][0], "l")]
    before = store.books()
    for action in ("delete", "bounce", "hold", "flush"):
        assert actions.act(store, action, stale, "tester", "stale") == []
    assert actions.act(store, "flush", [(world.ids["ready"][1], "l")], "tester", "not deferred") == []
    assert actions.act(store, "hold", [(world.ids["quarantined"][0], "q")], "tester", "already held") == []
    assert store.books() == before


def test_each_action_records_its_event_with_actor_and_reason(client: Client, world: World,
                                                             settings: Settings) -> None:
    store = client.store
    store.settings = store.settings.with_(actor="carol@ops")
    plan = [("flush", world.ids["deferred"][:1], "F"), ("hold", world.ids["ready"][:1], "h"),
            ("delete", world.ids["parked"][:1], "D"), ("bounce", world.ids["held"][:1], "b")]
    for action, ids, _kind in plan:
        assert actions.run(store, action, Selector(ids=tuple(ids)), reason=f"why {action}").moved == 1
    found = events.decode_all(client.redis.xrange(keys.EVENTS))
    for action, ids, kind in plan:
        name = events.KINDS[kind][0]
        (doc,) = [d for d in found if d["id"] == ids[0] and d["event"] == name and d.get("actor")]
        assert doc["actor"] == "carol@ops" and doc["reason"] == f"why {action}", doc
    (held,) = [d for d in found if d["id"] == world.ids["ready"][0] and d["event"] == "held"]
    assert held["domain"] == DOMAINS["ready"] and held["why"] == "operator"
    # Indexed too: `drain trace` finds the bounce by the message's id.
    traced = drain(settings, "trace", "--id", world.ids["held"][0], "--json")
    assert traced.returncode == 0, traced.stderr
    (doc,) = [json.loads(line) for line in traced.stdout.splitlines()]
    assert doc["state"] == "bounced"
    assert [e["actor"] for e in doc["events"] if e["event"] == "bounced"] == ["carol@ops"]


def test_bounce_sends_a_report_when_dsn_is_on(client: Client, relay: Sink, work: Callable[..., bool],
                                              world: World) -> None:
    store = client.store
    store.settings = store.settings.with_(dsn=True)
    done = actions.run(store, "bounce", Selector(ids=tuple(world.ids["deferred"])), reason="compromised sender")
    assert done.moved == 2 and done.reports == 2
    drain_rest(client, relay, work)
    reports = [m for m in relay.messages if m.sender == ""]
    assert len(reports) == 2 and all(m.recipients == ("billing@sender.example.com",) for m in reports)
    assert all(b"Action: failed" in m.data and b"administrator" in m.data for m in reports)
    assert not any(b"compromised" in m.data for m in reports)  # the operator's reason stays internal


def test_selectors_sender_glob_and_older_than(client: Client, world: World) -> None:
    none = actions.run(client.store, "delete", Selector(older_than_s=3600, states=("ready",)), dry_run=True)
    assert none.ids == []
    every = actions.run(client.store, "delete", Selector(sender="BILLING@*.example.com"), dry_run=True)
    everything = {i for s in actions.ALLOWED["delete"] for i in _state_ids(world, s)}
    assert set(every.ids) == everything
    assert actions.run(client.store, "delete", Selector(sender="other@*"), dry_run=True).ids == []


def test_hold_then_release_through_the_quarantine(client: Client, relay: Sink, work: Callable[..., bool],
                                                  world: World, settings: Settings) -> None:
    ids = world.ids["ready"]
    held = drain(settings, "hold", "--domain", DOMAINS["ready"], "--reason", "looks odd", "--json")
    assert held.returncode == 0, held.stderr
    assert sorted(json.loads(held.stdout)["ids"]) == sorted(ids)
    shown = json.loads(drain(settings, "quarantine", "show", "--json", ids[0]).stdout)
    assert shown["reasons"] == ["operator.hold"] and shown["findings"][0]["detail"] == "looks odd"
    released = drain(settings, "release", "--domain", DOMAINS["ready"], "--json")
    assert released.returncode == 0, released.stderr
    assert json.loads(released.stdout)["moved"] == len(ids)
    got = drain_rest(client, relay, work)
    assert {world.rcpt[i] for i in ids} <= got
    assert sum(1 for m in relay.messages for r in m.recipients if r == world.rcpt[ids[0]]) == 1


def test_audit_records_actor_reason_for_actions_rates_and_pauses(client: Client, world: World,
                                                                  settings: Settings) -> None:
    env = {"DRAIN_ACTOR": "alice@ops"}
    assert drain(settings, "delete", "--domain", DOMAINS["deferred"], "--reason", "spam run", env=env).returncode == 0
    assert drain(settings, "rate", "set", "50/s", "--reason", "relay asked", env=env).returncode == 0
    assert drain(settings, "pause", "--domain", "x.example.org", "--reason", "incident 7", env=env).returncode == 0
    assert drain(settings, "resume", "--domain", "x.example.org", env=env).returncode == 0
    result = drain(settings, "audit", "--since", "1h", "--json")
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    by_action = {e["action"]: e for e in entries}
    assert by_action["delete"]["actor"] == "alice@ops" and by_action["delete"]["reason"] == "spam run"
    assert sorted(by_action["delete"]["ids"].split(",")) == sorted(world.ids["deferred"])
    assert by_action["rate-set"]["reason"] == "relay asked" and by_action["rate-set"]["rate"] == "50/s"
    assert by_action["pause"]["reason"] == "incident 7" and by_action["resume"]["actor"] == "alice@ops"
    assert all(set(e) >= {"time", "actor", "action", "reason"} for e in entries)
    later = drain(settings, "audit", "--since", str(time.time() + 60), "--json")
    assert later.returncode == 0 and later.stdout == b""


def test_pause_for_resumes_by_itself_and_pause_list_says_why(client: Client, settings: Settings) -> None:
    env = {"DRAIN_ACTOR": "bob@ops"}
    assert drain(settings, "pause", "--for", "2h", "--reason", "relay upgrade", env=env).returncode == 0
    assert drain(settings, "pause", "--domain", "slow.example.org", "--for", "1h", env=env).returncode == 0
    listed = json.loads(drain(settings, "pause", "list", "--json").stdout)
    by_scope = {(row["scope"], row["name"]): row for row in listed}
    delivery = by_scope[("delivery", None)]
    assert delivery["reason"] == "relay upgrade" and delivery["actor"] == "bob@ops"
    assert 7000 < delivery["until"] - time.time() <= 7200
    domain = by_scope[("domain", "slow.example.org")]
    assert 3500 < domain["until"] - time.time() <= 3600
    # A short timed pause, set in-process: the claim finds delivery paused, then not (the
    # 2-hour pause resumed first: a pause never shortens one in force).
    control.resume(client.store)
    control.pause(client.store, reason="blip", for_s=0.5)
    client.enqueue(synthetic(1))
    assert client.store.claim("probe", 1).paused
    start = time.monotonic()
    while client.store.claim("probe", 1).paused:  # polled: the flag lapses on the Redis server's clock
        assert time.monotonic() - start < 10, "the timed pause did not lapse"
        time.sleep(0.02)
    assert control.lapse(client.store, now=time.time() + 3601) == 1
    assert pauses.listing(client.redis) == []
    assert not client.redis.sismember(keys.PAUSED_DOMAINS, "slow.example.org")
    held = client.redis.hkeys(keys.INFLIGHT)
    client.store.settle("probe", [Outcome(i.decode(), "requeue") for i in held])


def test_durations_parse_or_refuse() -> None:
    assert parse_duration("90") == 90 and parse_duration("15m") == 900 and parse_duration("2h") == 7200
    assert parse_duration("7d") == 7 * 86400
    for bad in ("", "5x", "-1h", "nan", "1e9999", "h"):
        with pytest.raises(Exception, match="duration"):
            parse_duration(bad)
    assert parse_duration("366d") == 366 * 86400
    for absurd in ("99999999w", "367d", "53w", "31622401"):
        with pytest.raises(Exception, match="at most a year"):
            parse_duration(absurd)


def test_absurd_durations_and_times_are_refused_and_change_nothing(client: Client, world: World,
                                                                   settings: Settings) -> None:
    before = _snapshot(client.redis)
    for args in (("pause", "--for", "99999999w"), ("pause", "--domain", "slow.example.org", "--for", "400d"),
                 ("hold", "--all", "--older-than", "99999999w"), ("log", "--since", "999999999999999d"),
                 ("audit", "--since", "99999999999d"), ("trace", "--since", "0001-01-01")):
        result = drain(settings, *args)
        assert result.returncode == 2 and one_line(result), (args, result.stderr)
        assert result.stdout == b"", args
    assert _snapshot(client.redis) == before
