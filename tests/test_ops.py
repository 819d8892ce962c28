"""Operator actions (drain.ops) against a real Redis: each makes its state move and gives the
workers their RQ work tokens itself, so the CLI and scripts need not remember to."""

from __future__ import annotations

from drain.demo.seeding import synthetic
from drain.flow import ratelimit
from drain.intake import rules
from drain.intake.api import Client
from drain.ops import control, quarantine
from drain.ops import rules as rule_ops
from drain.ops.quarantine import Quarantine
from drain.settings import Settings
from drain.worker.dispatch import rq_queue
from tests.test_cli import drain


def _tokens(client: Client) -> int:
    return int(rq_queue(client.redis).count)


def test_resume_gives_the_waiting_mail_work_tokens(client: Client) -> None:
    control.pause(client.store)
    client.enqueue_many([synthetic(i) for i in range(3)])
    assert _tokens(client) == 0  # paused: enqueue queues no batch job
    assert control.resume(client.store) == 0
    assert not ratelimit.is_paused(client.redis)
    assert _tokens(client) == 1


def test_setting_a_rate_after_a_hold_gives_work_tokens(client: Client) -> None:
    held = control.set_rate(client.store, 0.0)
    assert held.held
    client.enqueue_many([synthetic(i) for i in range(3)])
    assert _tokens(client) == 0  # a global rate of 0 holds delivery: no batch job
    assert not control.set_rate(client.store, None).held
    assert _tokens(client) == 1


def test_release_gives_work_tokens_and_a_dry_run_changes_nothing(client: Client) -> None:
    rules.add(client.redis, "tester", domain="caught.example.com")
    client.enqueue_many([synthetic(i, domain="caught.example.com") for i in range(2)])
    ids = [r.id for r in Quarantine(client.store).records()]
    assert len(ids) == 2 and _tokens(client) == 0  # caught at the door: nothing ready
    assert rules.remove(client.redis, rules.load(client.redis)[0].id)
    dry = quarantine.release(client.store, ids, dry_run=True)
    assert (dry.passing, dry.released, _tokens(client)) == (ids, 0, 0)
    done = quarantine.release(client.store, ids, note="fixed")
    assert (done.released, done.failing, Quarantine(client.store).count()) == (2, {}, 0)
    assert _tokens(client) == 1


def test_a_planned_rule_counts_first_and_sweeps_when_added(client: Client) -> None:
    control.pause(client.store)
    client.enqueue_many([synthetic(i, domain="bulk.example.org") for i in range(12)]
                        + [synthetic(i, domain="keep.example.org") for i in range(2)])
    plan = rule_ops.plan(client.store, rule_ops.draft(None, "bulk.example.org", None))
    assert (plan.matched, plan.queued, plan.needs_confirmation) == (12, 14, True)
    assert plan.scope == "12 of 14 queued message(s)"
    assert Quarantine(client.store).count() == 0  # planning moves nothing
    rule, swept = rule_ops.add(client.store, plan, note="incident")
    assert swept == 12 and Quarantine(client.store).count() == 12
    assert (rule.domain, rule.actor, rule.note) == ("bulk.example.org", client.settings.actor, "incident")


def test_a_bad_rule_is_a_usage_error_before_redis_is_reached(settings: Settings) -> None:
    unreachable = {"DRAIN_REDIS_URL": "redis://127.0.0.1:1/0"}
    for args, said in ((("--header", "Subject: ("), "bad header pattern"), ((), "a rule needs --sender")):
        result = drain(settings, "quarantine", "rule", "add", *args, env=unreachable)
        assert result.returncode == 2, result.stderr
        assert said in result.stderr.decode() and len(result.stderr.splitlines()) == 1
