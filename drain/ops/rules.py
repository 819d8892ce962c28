"""Operator action: add a quarantine rule. The rule is weighed against the queued mail
first (how much it would catch, whether that needs the operator's confirmation); adding
it sweeps the queued mail it matches into quarantine."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from drain.errors import ConfigError
from drain.intake import rules
from drain.store import keys
from drain.store.store import Store


@dataclass(frozen=True)
class Plan:
    rule: rules.Rule  # the rule as it would be stored (its id is "-" until added)
    matched: int  # queued messages it would catch
    queued: int

    @property
    def needs_confirmation(self) -> bool:
        return rules.needs_confirmation(self.rule, self.matched, self.queued)

    @property
    def scope(self) -> str:
        """What it would catch, in words, for the confirmation refusal."""
        if rules.catches_everyone(self.rule):
            return "any sender"
        return f"{self.matched} of {self.queued} queued message(s)"


def draft(sender: str | None, domain: str | None, header: str | None) -> rules.Rule:
    """The rule as it would be stored (id "-"); refuses an empty or unusable rule (ConfigError)
    before anything is counted or stored."""
    name, pattern = rules.parse_header(header) if header else (None, None)
    return rules.Rule(id="-", sender=sender, domain=domain, header=name, pattern=pattern)


def plan(store: Store, rule: rules.Rule) -> Plan:
    """Weigh a drafted rule against the queued mail without adding it."""
    matched, queued = rules.reach(store, rule)
    return Plan(rule, matched, queued)


def add(store: Store, planned: Plan, note: str = "") -> tuple[rules.Rule, int]:
    """Store the planned rule (with the actor and note) and sweep the queued mail it
    matches into quarantine; returns the rule and how many messages moved."""
    p = planned.rule
    rule = rules.add(store.client, store.settings.actor, note,
                     sender=p.sender, domain=p.domain, header=p.header, pattern=p.pattern)
    return rule, rules.sweep(store, rule)


def add_as(store: Store, rule: rules.Rule) -> int:
    """Store a rule under its own id (over several cells every cell holds it under one id)
    and sweep the queued mail it matches; returns how many messages moved. The same rule
    already there is swept again only; another rule under that id is refused (ConfigError).
    The rules' version moves past the id, so a rule added later on this Redis alone gets
    a new one, and workers reload."""
    client = store.client
    if not client.hsetnx(keys.RULES, rule.id, json.dumps(asdict(rule))):
        held = next((r for r in rules.load(client) if r.id == rule.id), None)
        if held is None or (held.sender, held.domain, held.header, held.pattern) != (
                rule.sender, rule.domain, rule.header, rule.pattern):
            raise ConfigError(f"rule {rule.id} is another rule here (see `drain quarantine rule list`)")
    if int(client.incr(keys.RULE_SEQ)) < int(rule.id):
        client.set(keys.RULE_SEQ, rule.id)
    return rules.sweep(store, rule)
