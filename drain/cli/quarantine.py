"""The quarantine's commands: list, show, release, delete, export, and its rules (add, list,
remove). Releasing, deleting and adding a rule are done by drain.ops; these parse and print."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import click
from rich.table import Table

import drain.cli.cellops as cellops
from drain.cli.cells import CellsDown, by_cell, quarantine_count, quarantine_get, quarantine_records, quarantine_select
from drain.cli.options import MESSAGE_ID, Context, filter_options, json_option, limit_option, nonempty, pass_ctx
from drain.cli.render import emit, more_caption, none_released, out, report, rows_wanted, when
from drain.cli.terminal import cell, safe
from drain.errors import InputError
from drain.intake import rules
from drain.ops import quarantine as ops
from drain.ops import rules as rule_ops
from drain.ops.quarantine import Filter, Quarantine, Record
from drain.store.cells import Cell
from drain.store.store import Store

T = TypeVar("T")


@click.group()
def quarantine() -> None:
    """Inspect, release, delete and export quarantined mail; manage quarantine rules."""


@quarantine.command("list")
@json_option("JSON lines.")
@limit_option
@filter_options
@pass_ctx
def quarantine_list(obj: Context, as_json: bool, limit: int | None, reason: str | None, sender: str | None,
                    domain: str | None) -> None:
    """Quarantined messages, oldest first."""
    wanted = rows_wanted(limit, as_json)
    records: Callable[[Filter, int | None], Iterator[Record]]
    count: Callable[[], int]
    if obj.multi:  # every cell's, oldest first, ids naming their cell
        records = lambda flt, n: quarantine_records(obj, flt, n)  # noqa: E731
        count = lambda: quarantine_count(obj)  # noqa: E731
    else:
        q = Quarantine(obj.client.store)
        records, count = q.records, q.count
    if as_json:
        for record in records(Filter(reason, sender, domain), wanted):
            emit(record.summary())
        return
    found = list(records(Filter(reason, sender, domain), None if wanted is None else wanted + 1))
    table = Table(title=f"quarantine ({count():,} held)", caption=more_caption(len(found), wanted))
    table.add_column("id", no_wrap=True)
    table.add_column("quarantined", no_wrap=True)
    for column in ("reason", "sender", "recipients"):
        table.add_column(column, overflow="fold")
    for record in found[:wanted]:
        table.add_row(cell(record.id), when(record.quarantined_at), cell(", ".join(record.reasons)),
                      cell(record.sender),
                      cell(", ".join(record.recipients[:3]) + (" ..." if len(record.recipients) > 3 else "")))
    out.print(table)


@quarantine.command("show")
@click.argument("msg_id", metavar="ID", type=MESSAGE_ID)
@json_option("One JSON document (headers left out).")
@pass_ctx
def quarantine_show(obj: Context, msg_id: str, as_json: bool) -> None:
    """One quarantined message: reasons with evidence, attempts, audit trail, headers."""
    record = quarantine_get(obj, msg_id) if obj.multi else Quarantine(obj.client.store).get(msg_id)
    detail = record.detail()
    if as_json:
        emit(detail)
        return
    table = Table(title=cell(f"quarantined message {record.id}"), show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("sender", cell(record.sender or "<>"))
    table.add_row("recipients", cell(", ".join(record.recipients)))
    table.add_row("accepted", when(record.accepted_at))
    table.add_row("quarantined", when(record.quarantined_at))
    table.add_row("size", f"{record.size:,} bytes")
    table.add_row("attempts", cell(str(record.attempts) + (f" (last: {record.last_reply})" if record.last_reply
                                                            else "")))
    for finding in record.findings:
        table.add_row("reason", cell(f"{finding.get('code')}: {finding.get('detail', '')}"))
    for entry in record.audit:
        table.add_row("audit", cell(f"{when(entry.get('at', 0))} {entry.get('actor')} {entry.get('action')}"
                                    f"{' --force' if entry.get('force') else ''} {entry.get('note', '')}"))
    out.print(table)
    head = (record.raw or b"").split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0][:4000]
    for line in head.decode("utf-8", "replace").split("\n"):
        click.echo(safe(line.removesuffix("\r")))


def _selected(obj: Context, ids: tuple[str, ...], reason: str | None, sender: str | None,
              domain: str | None, missed: list[str] | None = None) -> tuple[list[str], str]:
    """The ids named, or those the filter matches (not both), and the filter as an audit note
    (cells that did not answer the filter named in `missed`)."""
    flt = Filter(reason, sender, domain)
    # Each id once: `delete --dry-run 1 1` said it would delete 2 (then deleted 1), and
    # `export 3 3` wrote 3.eml and then failed on it as an existing file.
    ids = tuple(dict.fromkeys(ids))
    if ids and not flt.empty:
        raise click.UsageError("give message ids or a filter, not both")
    if not ids and flt.empty:  # a usage error (exit 2), before anything is read or changed
        raise click.UsageError("name message ids, or a filter (--reason, --sender, --domain)")
    note = " ".join(f"--{k} {v}" for k, v in (("reason", reason), ("sender", sender), ("domain", domain)) if v)
    if obj.multi:
        return quarantine_select(obj, ids, flt, missed), note
    return Quarantine(obj.client.store).select(ids, flt), note


def _cells_missed(missed: list[str], done: str) -> None:
    """After acting on the cells that answered: exit 1 naming those that did not (a filter
    could not select their mail), so the command is run again once they are back."""
    if missed:
        raise CellsDown(f"cells {', '.join(missed)} did not answer: their quarantined mail was not {done};"
                        " run it again once they are back")


def _per_cell(obj: Context, chosen: list[str], action: Callable[[Store, list[str]], T]) -> list[tuple[Cell, T]]:
    """action(store, ids) once (one cell) or on each cell holding some of the ids (qualified)."""
    if not obj.multi:
        return [(Cell("", ""), action(obj.client.store, chosen))]
    return [(cell, action(client.store, local)) for cell, client, local in by_cell(obj, chosen)]


@quarantine.command("release")
@click.argument("ids", nargs=-1, metavar="[ID]...", type=MESSAGE_ID)
@filter_options
@click.option("--force", is_flag=True, help="Release even if validation still fails; workers deliver it as is.")
@click.option("--dry-run", is_flag=True, help="Say what would be released, change nothing.")
@json_option('Print {"released", "would_release", "ids", "still_failing", "dry_run"} as JSON.')
@pass_ctx
def quarantine_release(obj: Context, ids: tuple[str, ...], reason: str | None, sender: str | None,
                       domain: str | None, force: bool, dry_run: bool, as_json: bool) -> None:
    """Put messages back on the ready list. They are validated again first, unless --force."""
    missed: list[str] = []
    chosen, note = _selected(obj, ids, reason, sender, domain, missed)
    passing: list[str] = []
    failing: dict[str, list[str]] = {}
    released = 0
    for where, done in _per_cell(obj, chosen, lambda store, ids: ops.release(store, ids, force=force,
                                                                               dry_run=dry_run, note=note)):
        named = where.qualify if where.name else str
        passing += [named(i) for i in done.passing]
        failing.update({named(i): codes for i, codes in done.failing.items()})
        released += done.released
    result = {"released": released, "would_release": len(passing) if dry_run else 0, "ids": passing,
              "still_failing": failing, "dry_run": dry_run}
    if as_json:
        emit(result)
        _cells_missed(missed, "released")
        none_released("release", len(failing), released, dry_run)
        return
    verb = "would release" if dry_run else "released"
    click.echo(f"{verb} {len(passing) if dry_run else released} message(s)")
    for msg_id, codes in failing.items():
        click.echo(safe(f"kept {msg_id}: still fails validation ({', '.join(codes)}); use --force to release anyway"))
    _cells_missed(missed, "released")
    none_released("release", len(failing), released, dry_run)


@quarantine.command("delete")
@click.argument("ids", nargs=-1, metavar="[ID]...", type=MESSAGE_ID)
@filter_options
@click.option("--dry-run", is_flag=True, help="Say what would be deleted, change nothing.")
@json_option('Print {"deleted", "would_delete", "ids", "dry_run"} as JSON.')
@pass_ctx
def quarantine_delete(obj: Context, ids: tuple[str, ...], reason: str | None, sender: str | None,
                      domain: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete quarantined messages for good (counted as deleted)."""
    missed: list[str] = []
    chosen, note = _selected(obj, ids, reason, sender, domain, missed)
    deleted = sum(n for _cell, n in _per_cell(obj, chosen, lambda store, ids: ops.delete(store, ids, dry_run=dry_run,
                                                                                            note=note)))
    doc = {"deleted": deleted, "would_delete": len(chosen) if dry_run else 0, "ids": chosen, "dry_run": dry_run}
    report(as_json, doc, f"would delete {len(chosen)} message(s)" if dry_run else f"deleted {deleted} message(s)")
    _cells_missed(missed, "deleted")


def _not_stdout(_ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    """`--out -` made a folder (or an mbox file) named "-": refused, as it reads as standard output."""
    if str(value) == "-":
        raise click.BadParameter("'-' would be a file or folder named '-': export writes files, not standard output",
                                 param=param)
    return value


@quarantine.command("export")
@click.argument("ids", nargs=-1, metavar="[ID]...", type=MESSAGE_ID)
@filter_options
@click.option("--format", "fmt", type=click.Choice(["eml", "mbox"]), default="eml", show_default=True,
              help="eml: one ID.eml file per message in the --out folder; mbox: all in one --out file.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path), callback=_not_stdout,
              help="A folder for .eml files (made if only its last part is missing), or the mbox file to write.")
@click.option("--force", is_flag=True, help="Replace existing files (regular files only; never a device or link).")
@json_option('Print {"exported", "format", "out", "ids"} as JSON.')
@pass_ctx
def quarantine_export(obj: Context, ids: tuple[str, ...], reason: str | None, sender: str | None,
                      domain: str | None, fmt: str, out_path: Path, force: bool, as_json: bool) -> None:
    """Write the original bytes of quarantined messages, as .eml files or one mbox (a new file
    unless --force)."""
    missed: list[str] = []
    chosen, _note = _selected(obj, ids, reason, sender, domain, missed)
    count = (cellops.export(obj, chosen, fmt, out_path, force) if obj.multi
             else Quarantine(obj.client.store).export(chosen, fmt, out_path, force=force))
    report(as_json, {"exported": count, "format": fmt, "out": str(out_path), "ids": chosen},
           safe(f"exported {count} message(s) to {out_path}"))
    _cells_missed(missed, "exported")


@quarantine.group("rule")
def quarantine_rule() -> None:
    """Rules that quarantine matching mail, queued or yet to come."""


@quarantine_rule.command("add")
@click.option("--sender", callback=nonempty, help="Envelope sender, glob allowed (e.g. '*@bulk.example.com').")
@click.option("--domain", callback=nonempty, help="Any recipient in this domain.")
@click.option("--header", "header", callback=nonempty, help="'Name: regex' searched in that header's value(s).")
@click.option("--note", default="", help="Why, for the audit trail.")
@click.option("--dry-run", is_flag=True, help="Count the queued messages the rule would catch; add nothing.")
@click.option("--yes-all", is_flag=True,
              help="Confirm a rule that catches more than half of the queued mail (10 messages or more) "
                   "or any sender at all ('*').")
@json_option('Print {"id", "rule", "swept"} as JSON.')
@pass_ctx
def rule_add(obj: Context, sender: str | None, domain: str | None, header: str | None, note: str,
             dry_run: bool, yes_all: bool, as_json: bool) -> None:
    """Add a rule; messages already queued that match move to quarantine now."""
    probe = rule_ops.draft(sender, domain, header)  # an empty or unusable rule fails here, before Redis
    plan = cellops.rule_plan(obj, probe) if obj.multi else rule_ops.plan(obj.client.store, probe)
    matched, queued, confirm = plan.matched, plan.queued, plan.needs_confirmation
    if dry_run:
        if as_json:
            emit({"dry_run": True, "rule": probe.describe(), "would_sweep": matched, "queued": queued,
                  "needs_yes_all": confirm})
        else:
            click.echo(safe(f"rule ({probe.describe()}) would move {matched} of {queued} queued message(s) "
                            f"to quarantine" + ("; adding it needs --yes-all" if confirm else "")))
        return
    if confirm and not yes_all:
        raise click.UsageError(safe(f"rule ({probe.describe()}) would catch {plan.scope}; "
                                    "add --yes-all to add it anyway (--dry-run counts first)"))
    rule, swept = cellops.rule_add(obj, plan, note) if obj.multi else rule_ops.add(obj.client.store, plan, note)
    report(as_json, {"id": rule.id, "rule": rule.describe(), "swept": swept},
           safe(f"rule {rule.id} ({rule.describe()}): {swept} queued message(s) moved to quarantine"))


@quarantine_rule.command("list")
@json_option("JSON lines, one per rule.")
@pass_ctx
def rule_list(obj: Context, as_json: bool) -> None:
    """Rules in force, oldest first: what each matches, who added it, when and why."""
    if obj.multi:  # every cell's, merged by id, with the cells that hold each
        for row in cellops.rule_rows(obj):
            if as_json:
                emit({k: v for k, v in row.items() if k != "rule"})
            else:
                where = "" if len(row["cells"]) == len(obj.members) else f" [only on {', '.join(row['cells'])}]"
                click.echo(safe(f"{row['id']}: {row['rule']}  (by {row['actor']}, {when(row['created_at'])}) "
                                f"{row['note']}{where}"))
        return
    for rule in rules.load(obj.client.redis):
        if as_json:
            emit({"id": rule.id, "sender": rule.sender, "domain": rule.domain, "header": rule.header,
                  "pattern": rule.pattern, "actor": rule.actor, "created_at": rule.created_at, "note": rule.note})
        else:
            click.echo(safe(f"{rule.id}: {rule.describe()}  (by {rule.actor}, {when(rule.created_at)}) {rule.note}"))


@quarantine_rule.command("remove")
@click.argument("rule_id", metavar="ID")
@json_option('Print {"id", "removed"} as JSON.')
@pass_ctx
def rule_remove(obj: Context, rule_id: str, as_json: bool) -> None:
    """Remove rule ID (see `rule list`); mail it already quarantined stays there."""
    if not (cellops.rule_remove(obj, rule_id) if obj.multi else rules.remove(obj.client.redis, rule_id)):
        raise InputError(f"no rule {rule_id}")
    report(as_json, {"id": rule_id, "removed": True}, safe(f"rule {rule_id} removed"))

