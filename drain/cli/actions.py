"""Actions on queued mail: flush, bounce, delete, hold and release, each by selectors (ids,
--domain, --sender, --older-than, --state), with --dry-run, --reason and --all. The moves
are done by drain.ops.actions; these parse, refuse what is unsafe, and print."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from drain.cli.cellcmds import act as cells_act
from drain.cli.cellcmds import cells_down
from drain.cli.options import MESSAGE_ID, Context, domain_option, json_option, nonempty, parsed, pass_ctx
from drain.cli.render import emit, none_released
from drain.cli.terminal import safe
from drain.errors import ConfigError, InputError
from drain.ops import actions
from drain.ops.select import Selector, parse_duration

# Ids listed on a terminal after "would ..." (--json lists them all).
SHOWN_IDS = 20

PAST = {"flush": "flushed", "bounce": "bounced", "delete": "deleted", "hold": "held", "release": "released"}

HELP = {
    "flush": "Make deferred and held mail due now (like postqueue -f, or -s SITE with --domain). Mail "
             "held for its rate or by a breaker is held again if its limit still applies.",
    "bounce": "Bounce queued mail as the administrator: counted as bounced, with a report to the sender when "
              "DRAIN_DSN is on (the reason is not in it).",
    "delete": "Delete queued or quarantined mail for good (counted as deleted); no report to anyone.",
    "hold": "Put queued mail on hold (like postsuper -h): into quarantine with reason operator.hold; "
            "`drain release` puts it back.",
    "release": "Release held or quarantined mail to the ready list (like postsuper -H); each message is "
               "validated again first, unless --force.",
}


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ConfigError(f"a duration must be more than 0, got {text!r}")
    return seconds


# Callback of a duration option (90s, 15m, 2h, 7d): seconds, more than 0.
duration_option = parsed(_positive_duration)


def _selector_options(action: str, func: Callable[..., Any]) -> Callable[..., Any]:
    states = actions.ALLOWED[action]
    func = click.option("--dry-run", is_flag=True, help="Say how many and which, change nothing.")(func)
    func = click.option("--reason", default="", help="Why, for the audit log.")(func)
    func = click.option("--all", "all_", is_flag=True,
                        help="Every message in the states the action takes, when no other selector is given.")(func)
    func = click.option("--state", "states", multiple=True, type=click.Choice(states),
                        help=f"Only mail in this state (repeatable; default: {', '.join(states)}).")(func)
    func = click.option("--older-than", callback=duration_option, metavar="DURATION",
                        help="Only mail accepted at least this long ago (90s, 15m, 2h, 7d).")(func)
    func = click.option("--sender", metavar="GLOB", callback=nonempty,
                        help="Only mail from an envelope sender matching this glob "
                             "(e.g. '*@bulk.example.com'; case-insensitive).")(func)
    func = click.option("--domain", callback=domain_option, help="Only mail with a recipient at this domain.")(func)
    return click.argument("ids", nargs=-1, metavar="[ID]...", type=MESSAGE_ID)(func)


def _run(obj: Context, action: str, ids: tuple[str, ...], domain: str | None, sender: str | None,
         older_than: float | None, states: tuple[str, ...], all_: bool, reason: str, dry_run: bool,
         as_json: bool, force: bool = False) -> None:
    sel = Selector(ids, domain, sender, older_than, states)
    if sel.empty and not all_:
        raise click.UsageError(f"{action}: name message ids or a selector (--domain, --sender, --older-than, "
                               f"--state), or --all for every message it can take")
    failed: list[dict[str, str]] = []
    if obj.multi:  # ids go to their cell, selectors run on every cell
        done, failed = cells_act(obj, action, sel, reason, dry_run, force)
    else:
        done = actions.run(obj.client.store, action, sel, reason, dry_run=dry_run, force=force)
    doc = done.doc()
    if failed and not doc["matched"]:
        raise cells_down(action, failed)
    if not doc["matched"]:
        left = [f"{i} is {s.replace('_', ' ')}" for i, s in done.skipped.items()]
        if done.in_flight:
            left.append(f"{len(done.in_flight)} in flight, left to their worker")
        if as_json:  # a script still gets its document; the exit status and stderr say none matched
            emit(doc)
        raise InputError(f"0 matched: no message to {action}" + (f" ({'; '.join(left[:5])})" if left else ""))
    if as_json:
        emit({**doc, "cells_down": failed} if obj.multi else doc)
        if failed:
            raise cells_down(action, failed)
        none_released(action, len(done.still_failing), 0 if dry_run else done.moved, dry_run)
        return
    ids_shown = " ".join(done.ids[:SHOWN_IDS]) + (" ..." if len(done.ids) > SHOWN_IDS else "")
    if dry_run:
        click.echo(safe(f"would {action} {len(done.ids)} message(s): {ids_shown}"))
    else:
        click.echo(safe(f"{PAST[action]} {done.moved} message(s)"
                        + (f"; {done.reports} report(s) to senders" if done.reports else "")))
    for msg_id, codes in done.still_failing.items():
        click.echo(safe(f"kept {msg_id}: still fails validation ({', '.join(codes)}); use --force to release anyway"))
    for msg_id, state in done.skipped.items():
        click.echo(safe(f"left {msg_id}: it is {state.replace('_', ' ')}"))
    if done.in_flight:
        click.echo(f"left {len(done.in_flight)} message(s) in flight to their worker; run again once they settle")
    if failed:
        raise cells_down(action, failed)
    none_released(action, len(done.still_failing), 0 if dry_run else done.moved, dry_run)



def _command(action: str) -> click.Command:
    def command(obj: Context, as_json: bool, force: bool = False, **selectors: Any) -> None:
        _run(obj, action, as_json=as_json, force=force, **selectors)

    command.__doc__ = HELP[action]
    decorated: Callable[..., Any] = pass_ctx(command)
    decorated = json_option('Print {"action", "matched", "ids", "dry_run", "moved", "skipped", "in_flight", '
                            '"still_failing", "reports", "cells_down" (several cells)} as JSON.')(decorated)
    if action == "release":
        decorated = click.option("--force", is_flag=True,
                                 help="Release even if validation still fails; workers deliver it as is.")(decorated)
    return click.command(action, help=HELP[action])(_selector_options(action, decorated))


flush, bounce, delete, hold, release = (_command(a) for a in ("flush", "bounce", "delete", "hold", "release"))
