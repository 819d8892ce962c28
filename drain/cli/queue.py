"""The queue's commands: check and enqueue message files, and read the queue (status,
backlog, deferred)."""

from __future__ import annotations

import contextlib
import mailbox
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from drain.cli.interrupt import held as interrupts_held
from drain.cli.options import Context, FiniteFloat, Whole, address_value, json_option, limit_option, pass_ctx
from drain.cli.render import emit, fail, live, more_caption, out, rows_wanted, when
from drain.cli.terminal import cell, safe
from drain.errors import DrainError, InputError

if TYPE_CHECKING:
    from rich.table import Table

    from drain.intake.api import Submission
# What a command needs beyond click is imported in the command: `drain` imports this module
# for any of its commands (and for their help).

watch_option = click.option("--watch", "watch_s", type=FiniteFloat(0, 86400), default=None, metavar="SECONDS",
                            help="Refresh in place every SECONDS (plain output only).")

@click.command()
@json_option("One JSON line per file.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@pass_ctx
def check(obj: Context, as_json: bool, paths: tuple[str, ...]) -> None:
    """Give the verdict the workers would give each message file, without queueing it."""
    from drain import validate
    from drain.message import envelope_from_headers

    s = obj.settings
    limits, severity = validate.configured(s)
    for path in paths:  # every path first, as enqueue does: a bad one is a usage error, before any verdict
        if path != "-":
            _readable_file(path)
    for path in paths:
        raw = _read(path, s.max_message_bytes)
        verdict = validate.check(raw, envelope_from_headers(raw), limits, severity)
        if as_json:
            emit({"path": path, "verdict": verdict.label, "reasons": verdict.reasons,
                  "recorded": verdict.recorded, "findings": [f.as_dict() for f in verdict.findings]})
        else:
            detail = "; ".join(f"{f.code} ({f.detail})" if f.detail else f.code for f in verdict.findings
                               if f.code in verdict.reasons)
            click.echo(safe(f"{path}: {verdict.label}" + (f": {detail}" if detail else "")))


def _read(path: str, limit: int | None = None) -> bytes:
    """The file's bytes; with a limit, at most limit + 1 of them (enough to refuse it as too big)."""
    size = -1 if limit is None else limit + 1
    try:
        if path == "-":
            return sys.stdin.buffer.read(size)
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


@click.command()
@click.option("--from", "sender", metavar="ADDRESS",
              help="Envelope sender (default: from the headers; '' or '<>' for the null sender).")
@click.option("--to", "recipients", multiple=True, metavar="ADDRESS",
              help="Envelope recipient, repeatable (default: To, Cc and Bcc of the headers).")
@click.option("--mbox", is_flag=True, help="Each PATH is an mbox file holding many messages.")
@click.option("--backlog", "bulk", is_flag=True, help="Bulk load: queue behind new mail (the backlog lane).")
@json_option("Print {accepted, rejected, ids} as JSON.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@pass_ctx
def enqueue(obj: Context, sender: str | None, recipients: tuple[str, ...], mbox: bool, bulk: bool, as_json: bool,
            paths: tuple[str, ...]) -> None:
    """Queue message files (or - for standard input); prints their ids.

    Every input is checked before anything is queued (files readable, mbox files parseable).
    If queueing stops part way, the ids already queued are still printed (in the JSON too)."""
    from drain.intake.api import Submission

    if sender == "<>":  # the null sender as SMTP writes it (sendmail -f '<>'): it was refused as no address
        sender = ""
    if sender is not None and sender != "":
        address_value(sender, "--from")
    for rcpt in recipients:
        address_value(rcpt, "--to")
    if paths.count("-") > 1:
        raise click.BadParameter("'-' (standard input) can be read only once", param_hint="PATH")
    for path in paths:
        if path != "-":
            _readable_file(path)
    with contextlib.ExitStack() as stack:
        boxes = {path: _open_mbox(path, stack) for path in paths} if mbox else {}
        stdin = _read("-", obj.settings.max_message_bytes) if "-" in paths and not mbox else b""

        def submissions() -> Iterator[tuple[str, Submission]]:
            for path in paths:
                if mbox:
                    box, box_keys = boxes[path]
                    for key in box_keys:
                        raw = _mbox_message(box, key, obj.settings.max_message_bytes)
                        yield f"{path}#{key}", Submission(raw, sender, recipients or None)
                else:
                    raw = stdin if path == "-" else _read(path, obj.settings.max_message_bytes)
                    yield path, Submission(raw, sender, recipients or None)

        result = _enqueue_reporting(obj, submissions(), "backlog" if bulk else "fresh", as_json)
    if result.rejected:
        sys.exit(1)


def _mbox_message(box: mailbox.mbox, key: str, limit: int) -> bytes:
    """One message of an mbox (without its 'From ' line), at most limit + 1 bytes of it, as
    _read gives a file: get_bytes read a message whole, however far past the limit."""
    with box.get_file(key) as part:  # closing a part leaves the mbox's own file open
        raw: bytes = part.read(limit + 1)
    return raw.replace(os.linesep.encode(), b"\n")  # what get_bytes does


def _readable_file(path: str) -> None:
    if not Path(path).is_file():
        raise click.BadParameter(f"no such file: {path}" if not Path(path).exists() else f"not a file: {path}",
                                 param_hint="PATH")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="PATH") from None


def _open_mbox(path: str, stack: contextlib.ExitStack) -> tuple[mailbox.mbox, list[str]]:
    """An mbox and its message keys, read through once now: standard input is spooled to a
    temporary file first, and a file that does not start with a 'From ' line is refused."""
    from drain.intake.mboxfile import BoundedMbox

    if path == "-":
        source = str(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="drain-stdin-"))) / "stdin.mbox")
        try:
            with open(source, "xb") as spool:
                shutil.copyfileobj(sys.stdin.buffer, spool)
        except OSError as exc:
            raise click.BadParameter(f"cannot spool standard input: {exc.strerror}", param_hint="PATH") from None
    else:
        source = path
    try:
        with open(source, "rb") as handle:
            head = handle.read(5)
        if head and head != b"From ":
            raise click.BadParameter(f"{path} is not an mbox file (it does not start with a 'From ' line)",
                                     param_hint="PATH")
        box = BoundedMbox(source, create=False)  # mailbox.mbox read each line whole
        stack.callback(box.close)
        return box, list(box.iterkeys())
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="PATH") from None


@dataclass
class _Queued:
    ids: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def _enqueue_reporting(obj: Context, items: Iterator[tuple[str, Submission]], lane: str,
                       as_json: bool) -> _Queued:
    """Queue in groups of one transaction each. Plain output prints each group's ids once Redis
    holds them; if anything fails part way, what was queued is reported before the error."""
    import redis

    from drain.store.enqueue import ENQUEUE_CHUNK, ENQUEUE_CHUNK_BYTES

    client = obj.client  # a Redis or durability setting drain cannot use fails here, before anything
    done = _Queued()
    group: list[tuple[str, Submission]] = []
    held = [0]  # bytes of mail in the group: large mail goes in smaller groups, as in chunks

    def commit() -> None:
        with interrupts_held():  # Ctrl-C after the chunk: every id Redis holds is reported
            accepted = client.enqueue_many((sub for _name, sub in group), lane=lane, source="cli")
            for index, why in accepted.rejected:
                done.rejected.append((group[index][0], why))
                fail(f"rejected {group[index][0]}: {why}")
            done.ids.extend(accepted.ids)
            if not as_json:
                for msg_id in accepted.ids:
                    click.echo(msg_id)
            group.clear()
            held[0] = 0

    def report(error: str | None) -> None:
        if as_json:
            doc: dict[str, Any] = {"accepted": len(done.ids), "rejected": len(done.rejected), "ids": done.ids}
            emit({**doc, "error": error} if error else doc)
        elif error is None:
            click.echo(f"accepted {len(done.ids)}, rejected {len(done.rejected)}", err=True)

    try:
        for item in items:
            group.append(item)
            held[0] += len(item[1].message) if isinstance(item[1].message, bytes) else 0
            if len(group) >= ENQUEUE_CHUNK or held[0] >= ENQUEUE_CHUNK_BYTES:
                commit()
        if group:
            commit()
    except KeyboardInterrupt:
        report("interrupted")
        raise
    except (DrainError, redis.RedisError, OSError, mailbox.Error, KeyError) as exc:
        why = str(exc)
        if isinstance(exc, redis.RedisError):  # leave out the command redis-py quotes (message bytes)
            why = f"Redis: {why.rpartition('caused error: ')[2]}"
        report(why)
        raise InputError(f"stopped after queueing {len(done.ids)} message(s), whose ids are printed: {why}") from None
    report(None)
    return done


@click.command()
@json_option("One JSON document.")
@watch_option
@pass_ctx
def status(obj: Context, as_json: bool, watch_s: float | None) -> None:
    """The books (every state's count) and the pace."""
    from rich.table import Table
    from rich.text import Text

    from drain.cli.cells import status as cells_status
    from drain.flow import ratelimit
    from drain.intake import door as intake
    from drain.observe.status import read as read_status

    if obj.multi:  # several cells: sums, a column per cell, the cells down named
        cells_status(obj, as_json, watch_s)
        return
    if as_json:
        emit(read_status(obj.client.store).as_dict())
        return

    def render() -> Table:
        st = read_status(obj.client.store)
        data = st.as_dict()
        table = Table(title="drain status", show_header=False)
        for key in ("accepted", "ready", "deferred", "in_flight", "delivered", "bounced", "quarantined", "deleted"):
            table.add_row(key.replace("_", " "), f"{data[key]:,}")
            if key == "deferred":
                for part, label in (("rate", "held for rate"), ("breaker", "held by a breaker"),
                                    ("relay", "deferred by the relay")):
                    table.add_row(f"  {label}", f"{st.deferred_by.get(part, 0):,}")
        table.add_row("books balance", "yes" if st.books.balanced else "NO")
        table.add_row("oldest age", f"{st.oldest_age_s:,.1f} s")
        table.add_row("rate", f"{st.rate_per_s:,.1f} msg/s")
        table.add_row("eta", Text(_eta_text(st.eta_s, st.held_by, st.eta_at_least)))
        if ratelimit.is_paused(obj.client.redis):
            table.add_row("delivery", "PAUSED")
        elif st.held is not None:
            table.add_row("delivery", f"HELD ({st.held})")
        for name in st.domains_held:
            table.add_row("held (rate 0)", Text(name))
        for name in data.get("breakers_open", []):
            table.add_row("circuit open", cell(name))
        for name, relay in st.relays.items():
            until = relay["open_until"]
            table.add_row(cell(f"relay {name}"), cell(f"handed {relay['handed']:,}, no session {relay['failed']:,}"
                                                      + (f", OPEN until {when(until)}" if isinstance(until, float)
                                                         else "")))
            refusing = relay.get("refusing")
            if isinstance(refusing, dict):
                table.add_row(cell(f"relay {name}"), cell(f"REFUSING EVERYTHING: {refusing['reply']} (its 5xx"
                                                          f" defer; {refusing['bounced']:,} bounced before that)"))
        if intake.is_paused(obj.client.redis):
            table.add_row("intake (SMTP)", "PAUSED")
        for name, queued in st.tenants:
            table.add_row(Text(f"tenant {name}"), f"{queued:,}" + ("  (PAUSED)" if name in st.tenants_paused else ""))
        if st.tenants_queued > len(st.tenants):
            table.add_row("tenants", f"{st.tenants_queued:,} with queued mail")
        return table

    live(render, watch_s)


@click.command()
@json_option("One JSON document.")
@watch_option
@click.option("--top", type=Whole(1), default=30, show_default=True, help="Rows shown (plain output).")
@click.option("--by", "by", type=click.Choice(["domain", "tenant"]), default="domain", show_default=True,
              help="Shape by destination domain and age, or list queued mail by tenant.")
@pass_ctx
def backlog(obj: Context, as_json: bool, watch_s: float | None, top: int, by: str) -> None:
    """The backlog's shape: queued mail by destination domain and age, with per-domain ETA."""
    from rich.table import Table

    from drain.cli.cells import backlog as cells_backlog
    from drain.observe.backlog import BUCKETS_S, Shape, shape

    def read() -> Shape:
        if obj.multi:  # added up over the cells
            return cells_backlog(obj, as_json, top)
        return shape(obj.client.store)

    if by == "tenant":
        from drain.cli.tenant import by_tenant

        by_tenant(obj, as_json, watch_s, top)
        return
    if as_json:
        if obj.multi:
            read()
        else:
            emit(shape(obj.client.store).as_dict())
        return

    def render() -> Table:
        current = read()
        more = len(current.domains) - top
        table = Table(title=f"backlog: {current.total:,} queued",
                      caption=f"{more:,} more domain(s); --top N shows more" if more > 0 else None)
        table.add_column("domain", overflow="fold")
        table.add_column("total", justify="right")
        for lower in BUCKETS_S:
            table.add_column(f"{lower // 60}m+" if lower else "<5m", justify="right")
        table.add_column("eta", justify="right")
        for d in current.domains[:top]:
            eta = safe(d.held_by) if d.held_by else ("-" if d.eta_s is None else
                                                     f"{'>=' if d.eta_at_least else ''}{d.eta_s:,.0f}s")
            table.add_row(cell(d.domain), f"{d.total:,}", *(f"{n:,}" if n else "." for n in d.by_age), eta)
        return table

    live(render, watch_s)


def _eta_text(eta_s: float | None, held_by: dict[str, str], at_least: bool = False) -> str:
    """The headline ETA (">=" when it is a lower bound), naming what holds mail back (that
    mail is not in the figure)."""
    if "*" in held_by:
        return held_by["*"]
    text = "-" if eta_s is None else f"{'>=' if at_least else ''}{eta_s:,.0f} s"
    if held_by:
        named = ", ".join(f"{d} ({why})" for d, why in sorted(held_by.items())[:3])
        more = f" and {len(held_by) - 3} more" if len(held_by) > 3 else ""
        text += f"; not counted, held: {named}{more}"
    return text


@click.group()
def deferred() -> None:
    """Mail waiting for its next attempt."""


@deferred.command("list")
@json_option("JSON lines.")
@limit_option
@click.option("--domain", default=None, metavar="DOMAIN", help="Only mail to this destination domain.")
@click.option("--reason", type=click.Choice(["rate", "breaker", "relay"]), default=None,
              help="Only mail held for its domain's rate, held by a circuit breaker, or deferred by the relay.")
@pass_ctx
def deferred_list(obj: Context, as_json: bool, limit: int | None, domain: str | None, reason: str | None) -> None:
    """Deferred messages, soonest next attempt first: why each waits, attempts, the last reply."""
    from rich.table import Table

    from drain.cli.cells import deferred_rows
    from drain.observe.deferred import Deferred, records

    def read(n: int | None) -> Iterator[Deferred]:  # several cells: every cell's, ids with their cell
        return deferred_rows(obj, n, domain, reason) if obj.multi else records(obj.client.store, n, domain=domain,
                                                                                reason=reason)

    wanted = rows_wanted(limit, as_json)
    if as_json:
        for row in read(wanted):
            emit(row.as_dict())
        return
    rows = list(read(None if wanted is None else wanted + 1))
    table = Table(title="deferred", caption=more_caption(len(rows), wanted))
    table.add_column("id", no_wrap=True)
    table.add_column("why", no_wrap=True)
    table.add_column("next attempt", no_wrap=True)
    table.add_column("attempts", justify="right")
    table.add_column("last reply", overflow="fold")
    table.add_column("recipients", overflow="fold")
    why = {"rate": "held for rate", "breaker": "held by breaker", "relay": "deferred by relay"}
    for row in rows[:wanted]:
        table.add_row(cell(row.id), why[row.reason], when(row.next_attempt_at), str(row.attempts),
                      cell(row.last_reply[:200]),
                      cell(", ".join(row.recipients[:2]) + (" ..." if len(row.recipients) > 2 else "")))
    out.print(table)

