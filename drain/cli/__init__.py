"""The `drain` command. Usage errors exit 2 with one line; --json writes only JSON to stdout."""

from __future__ import annotations

import contextlib
import json
import logging
import mailbox
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import redis
from email_validator import EmailNotValidError, validate_email
from rich.console import Console
from rich.table import Table
from rich.text import Text

from drain import logging_setup, validate
from drain.cli.terminal import cell, safe
from drain.errors import ConfigError, DrainError, InputError
from drain.flow import ratelimit
from drain.intake import door as intake
from drain.intake import rules
from drain.intake.api import Client, Submission
from drain.message import envelope_from_headers
from drain.observe.status import read as read_status
from drain.observe.status import startup_line
from drain.ops.quarantine import Filter, Quarantine
from drain.settings import Settings, parse_domain
from drain.store import embedded

# Scripts and pipes get wide tables rather than tables squeezed to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)


class Context:
    def __init__(self, redis_url: str | None) -> None:
        overrides: dict[str, Any] = {"redis_url": redis_url} if redis_url else {}
        self.settings = Settings.from_env(**overrides)
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client.connect(self.settings)
        return self._client


pass_ctx = click.make_pass_decorator(Context)


def fail(message: str) -> None:
    """One line on standard error, whatever the message held (controls shown as escapes)."""
    click.echo(f"drain: {safe(' '.join(message.split()))}", err=True)


class FiniteFloat(click.FloatRange):
    """A float option that refuses nan and inf (a FloatRange lets nan through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _domain_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--domain of `rate set`, `pause` and `resume`: a valid domain name, lowercased."""
    if value is None:
        return None
    try:
        return parse_domain(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def emit(data: Any) -> None:
    click.echo(json.dumps(data, separators=(",", ":")))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--redis-url", envvar="DRAIN_REDIS_URL", default=None, metavar="URL",
              help="Redis to use (env DRAIN_REDIS_URL); default: the embedded one under DRAIN_HOME.")
@click.version_option(package_name="drain")
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None) -> None:
    """drain: validate, quarantine and deliver a mail backlog at a rate you control."""
    ctx.obj = Context(redis_url)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON line per file.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@pass_ctx
def check(obj: Context, as_json: bool, paths: tuple[str, ...]) -> None:
    """Give the verdict the workers would give each message file, without queueing it."""
    s = obj.settings
    limits = validate.Limits.from_settings(s)
    severity = validate.severity_with(s.quarantine_codes, s.record_codes)
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


def _address(value: str, what: str) -> str:
    try:
        validate_email(value, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=True)
    except EmailNotValidError as exc:
        raise click.BadParameter(f"{value!r} is not a valid address: {exc}", param_hint=what) from None
    return value


@cli.command()
@click.option("--from", "sender", metavar="ADDRESS", help="Envelope sender (default: from the headers).")
@click.option("--to", "recipients", multiple=True, metavar="ADDRESS",
              help="Envelope recipient, repeatable (default: To, Cc and Bcc of the headers).")
@click.option("--mbox", is_flag=True, help="Each PATH is an mbox file holding many messages.")
@click.option("--backlog", "bulk", is_flag=True, help="Bulk load: queue behind new mail (the backlog lane).")
@click.option("--json", "as_json", is_flag=True, help="Print {accepted, rejected, ids} as JSON.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@pass_ctx
def enqueue(obj: Context, sender: str | None, recipients: tuple[str, ...], mbox: bool, bulk: bool, as_json: bool,
            paths: tuple[str, ...]) -> None:
    """Queue message files (or - for standard input); prints their ids.

    Every input is checked before anything is queued (files readable, mbox files parseable).
    If queueing stops part way, the ids already queued are still printed (in the JSON too)."""
    if sender is not None and sender != "":
        _address(sender, "--from")
    for rcpt in recipients:
        _address(rcpt, "--to")
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
                        yield f"{path}#{key}", Submission(box.get_bytes(key), sender, recipients or None)
                else:
                    raw = stdin if path == "-" else _read(path, obj.settings.max_message_bytes)
                    yield path, Submission(raw, sender, recipients or None)

        result = _enqueue_reporting(obj, submissions(), "backlog" if bulk else "fresh", as_json)
    if result.rejected:
        sys.exit(1)


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
        box = mailbox.mbox(source, create=False)
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
    from drain.store.store import ENQUEUE_CHUNK

    client = obj.client  # a Redis or durability setting drain cannot use fails here, before anything
    done = _Queued()
    group: list[tuple[str, Submission]] = []

    def commit() -> None:
        accepted = client.enqueue_many((sub for _name, sub in group), lane=lane)
        for index, why in accepted.rejected:
            done.rejected.append((group[index][0], why))
            fail(f"rejected {group[index][0]}: {why}")
        done.ids.extend(accepted.ids)
        if not as_json:
            for msg_id in accepted.ids:
                click.echo(msg_id)
        group.clear()

    def report(error: str | None) -> None:
        if as_json:
            doc: dict[str, Any] = {"accepted": len(done.ids), "rejected": len(done.rejected), "ids": done.ids}
            emit({**doc, "error": error} if error else doc)
        elif error is None:
            click.echo(f"accepted {len(done.ids)}, rejected {len(done.rejected)}", err=True)

    try:
        for item in items:
            group.append(item)
            if len(group) >= ENQUEUE_CHUNK:
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


@cli.command()
@click.option("--burst", is_flag=True, help="Stop when nothing is left to do now.")
@click.option("--processes", "-p", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes on this machine (an RQ worker pool when more than one).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Least severe log records written to standard error.")
@pass_ctx
def worker(obj: Context, burst: bool, processes: int, log_level: str) -> None:
    """Run RQ workers that validate, quarantine and deliver."""
    from drain.store.connection import connect_patiently
    from drain.worker.delivery import RelayConfig
    from drain.worker.rqworker import run

    RelayConfig.from_url(obj.settings.relay)  # a bad relay URL fails here, in one line
    logging_setup.configure(obj.settings.log_format, "worker")
    client = connect_patiently(obj.settings)  # waits (and logs) while Redis is down
    logging_setup.announce(startup_line("worker", obj.settings, client))
    run(client, obj.settings, processes=processes, burst=burst, logging_level=log_level.upper())


# Lists stop after this many rows on a terminal unless --limit says otherwise (--limit 0: all);
# pipes and --json get everything.
TTY_ROWS = 50


def _rows_wanted(limit: int | None, as_json: bool) -> int | None:
    if limit == 0:
        return None
    if limit is None and not as_json and sys.stdout.isatty():
        return TTY_ROWS
    return limit


def _more_caption(found: int, wanted: int | None) -> str | None:
    """Says that rows were left out (found holds one row more than wanted when there are more)."""
    if wanted is None or found <= wanted:
        return None
    return f"first {wanted:,} shown; --limit N for more, --limit 0 for all"


def _live(render: Any, watch_s: float | None) -> None:
    """Print once, or refresh in place every watch_s seconds until Ctrl-C."""
    if watch_s is None:
        out.print(render())
        return
    from rich.live import Live

    with Live(render(), console=out, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(max(0.2, watch_s))
                live.update(render())
        except KeyboardInterrupt:
            pass


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.option("--watch", "watch_s", type=FiniteFloat(0), default=None, metavar="SECONDS",
              help="Refresh in place every SECONDS (plain output only).")
@pass_ctx
def status(obj: Context, as_json: bool, watch_s: float | None) -> None:
    """The books (every state's count) and the pace."""
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
        table.add_row("eta", Text(_eta_text(st.eta_s, st.held_by)))
        if ratelimit.is_paused(obj.client.redis):
            table.add_row("delivery", "PAUSED")
        elif st.held is not None:
            table.add_row("delivery", f"HELD ({st.held})")
        for name in st.domains_held:
            table.add_row("held (rate 0)", Text(name))
        for name in data.get("breakers_open", []):
            table.add_row("circuit open", cell(name))
        if intake.is_paused(obj.client.redis):
            table.add_row("intake (SMTP)", "PAUSED")
        return table

    _live(render, watch_s)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.option("--watch", "watch_s", type=FiniteFloat(0), default=None, metavar="SECONDS",
              help="Refresh in place every SECONDS (plain output only).")
@click.option("--top", type=click.IntRange(1), default=30, show_default=True, help="Domains shown (plain output).")
@pass_ctx
def backlog(obj: Context, as_json: bool, watch_s: float | None, top: int) -> None:
    """The backlog's shape: queued mail by destination domain and age, with per-domain ETA."""
    from drain.observe.backlog import BUCKETS_S, shape

    if as_json:
        emit(shape(obj.client.store).as_dict())
        return

    def render() -> Table:
        current = shape(obj.client.store)
        more = len(current.domains) - top
        table = Table(title=f"backlog: {current.total:,} queued",
                      caption=f"{more:,} more domain(s); --top N shows more" if more > 0 else None)
        table.add_column("domain", overflow="fold")
        table.add_column("total", justify="right")
        for lower in BUCKETS_S:
            table.add_column(f"{lower // 60}m+" if lower else "<5m", justify="right")
        table.add_column("eta", justify="right")
        for d in current.domains[:top]:
            eta = safe(d.held_by) if d.held_by else ("-" if d.eta_s is None else f"{d.eta_s:,.0f}s")
            table.add_row(cell(d.domain), f"{d.total:,}", *(f"{n:,}" if n else "." for n in d.by_age), eta)
        return table

    _live(render, watch_s)


def _eta_text(eta_s: float | None, held_by: dict[str, str]) -> str:
    """The headline ETA, naming what holds mail back (that mail is not in the figure)."""
    if "*" in held_by:
        return held_by["*"]
    text = "-" if eta_s is None else f"{eta_s:,.0f} s"
    if held_by:
        named = ", ".join(f"{d} ({why})" for d, why in sorted(held_by.items())[:3])
        more = f" and {len(held_by) - 3} more" if len(held_by) > 3 else ""
        text += f"; not counted, held: {named}{more}"
    return text


@cli.command("drain")
@click.option("--rate", "rate_text", default=None, help="Set the global rate first (e.g. 500/s, unlimited).")
@click.option("--processes", "-p", default=2, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes to run for the session.")
@pass_ctx
def drain_session(obj: Context, rate_text: str | None, processes: int) -> None:
    """Drain the queue now: workers, a live progress bar, ETA; Ctrl-C stops cleanly."""
    from drain.cli.session import run_session
    from drain.worker.delivery import RelayConfig

    per_second = None
    if rate_text is not None:
        try:
            per_second = ratelimit.parse_rate(rate_text)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--rate") from None
        if ratelimit.holds(per_second):
            raise click.BadParameter("0 would hold delivery for good (to hold it: drain rate set 0)",
                                     param_hint="--rate")
    RelayConfig.from_url(obj.settings.relay)
    if not run_session(obj.client, per_second, rate_text is not None, processes, out):
        sys.exit(1)


@cli.group()
def deferred() -> None:
    """Mail waiting for its next attempt."""


@deferred.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
@click.option("--limit", type=click.IntRange(0), default=None,
              help=f"At most this many (default: {TTY_ROWS} on a terminal, all otherwise; 0: all).")
@click.option("--domain", default=None, metavar="DOMAIN", help="Only mail to this destination domain.")
@click.option("--reason", type=click.Choice(["rate", "breaker", "relay"]), default=None,
              help="Only mail held for its domain's rate, held by a circuit breaker, or deferred by the relay.")
@pass_ctx
def deferred_list(obj: Context, as_json: bool, limit: int | None, domain: str | None, reason: str | None) -> None:
    """Deferred messages, soonest next attempt first: why each waits, attempts, the last reply."""
    from drain.observe.deferred import records

    wanted = _rows_wanted(limit, as_json)
    if as_json:
        for row in records(obj.client.store, wanted, domain=domain, reason=reason):
            emit(row.as_dict())
        return
    rows = list(records(obj.client.store, None if wanted is None else wanted + 1, domain=domain, reason=reason))
    table = Table(title="deferred", caption=_more_caption(len(rows), wanted))
    table.add_column("id", no_wrap=True)
    table.add_column("why", no_wrap=True)
    table.add_column("next attempt", no_wrap=True)
    table.add_column("attempts", justify="right")
    table.add_column("last reply", overflow="fold")
    table.add_column("recipients", overflow="fold")
    why = {"rate": "held for rate", "breaker": "held by breaker", "relay": "deferred by relay"}
    for row in rows[:wanted]:
        table.add_row(cell(row.id), why[row.reason], _time(row.next_attempt_at), str(row.attempts),
                      cell(row.last_reply[:200]),
                      cell(", ".join(row.recipients[:2]) + (" ..." if len(row.recipients) > 2 else "")))
    out.print(table)


@cli.group()
def breaker() -> None:
    """Circuit breakers of destinations (and of the relay itself, named "(relay)")."""


@breaker.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@pass_ctx
def breaker_list(obj: Context, as_json: bool) -> None:
    """Every destination with failures on record: failures, times opened, open until."""
    from drain.flow.breaker import Breakers

    now = time.time()
    states = Breakers(obj.client.redis, obj.settings).states()
    rows = [{"domain": d, "open": st.get("open_until", 0) > now, "open_until": st.get("open_until"),
             "failures": int(st.get("failures", 0)), "trips": int(st.get("trips", 0))}
            for d, st in sorted(states.items())]
    if as_json:
        emit({"breakers": rows})
        return
    table = Table(title="circuit breakers")
    for column in ("domain", "state", "open until", "failures", "times opened"):
        table.add_column(column)
    for row in rows:
        until = row["open_until"]
        table.add_row(cell(str(row["domain"])), "OPEN" if row["open"] else "closed",
                      _time(float(until)) if isinstance(until, float) else "-", str(row["failures"]), str(row["trips"]))
    out.print(table)


@breaker.command("close")
@click.argument("domain", metavar="DOMAIN")
@click.option("--note", default="", help="Why, for the audit trail.")
@pass_ctx
def breaker_close(obj: Context, domain: str, note: str) -> None:
    """Close a breaker now (the far side is fixed): its held mail is due at once. Audited."""
    from drain.flow.breaker import close

    name = domain if domain == "(relay)" else domain.lower()
    released = close(obj.client.redis, name, obj.settings.actor, note)
    if released is None:
        click.echo(f"error: no circuit breaker on record for {domain!r} (see `drain breaker list`)", err=True)
        sys.exit(1)
    click.echo(f"closed the circuit breaker for {name}; {released} held messages are due now")


@cli.group()
def rate() -> None:
    """Show or set the delivery rate, live for all workers."""


@rate.command("show")
@click.option("--json", "as_json", is_flag=True, help='One JSON document {"global", "paused", "domains"}.')
@pass_ctx
def rate_show(obj: Context, as_json: bool) -> None:
    """Global and per-domain rates: operator caps, adaptive (throttled) rates, concurrency, pauses."""
    shown = ratelimit.show(obj.client.redis)
    if as_json:
        emit(shown)
        return
    glob = shown["global"]
    click.echo(f"global: {ratelimit.format_rate(glob if isinstance(glob, float) else None)}"
               f"{'  (PAUSED)' if shown['paused'] else ''}")
    domains = shown["domains"]
    assert isinstance(domains, dict)
    for name, d in domains.items():
        parts = [f"cap {ratelimit.format_rate(d['rate'])}" if d["rate"] is not None else "no cap"]
        if d["effective"]:
            parts.append(f"throttled to {ratelimit.format_rate(d['effective'])}")
        if d["concurrency"]:
            parts.append(f"{d['concurrency']} at once")
        if d["paused"]:
            parts.append("PAUSED")
        click.echo(safe(f"{name}: {', '.join(parts)}"))


@rate.command("set")
@click.argument("value", metavar="RATE")
@click.option("--domain", callback=_domain_option,
              help="Set the cap of this destination domain instead of the global rate.")
@click.option("--concurrency", type=click.IntRange(0), default=None,
              help="With --domain: most messages in flight to it at once (0 removes the cap).")
@click.option("--burst", type=FiniteFloat(0, 60), default=None,
              help="Seconds of rate that may go at once (global setting).")
@click.option("--json", "as_json", is_flag=True, help='Print {"domain", "rate", "concurrency", "burst"} as JSON.')
@pass_ctx
def rate_set(obj: Context, value: str, domain: str | None, concurrency: int | None, burst: float | None,
             as_json: bool) -> None:
    """Set RATE like 500/s, 30000/m; 0 holds delivery; 'unlimited' lifts the limit. Live for every worker."""
    try:
        per_second = ratelimit.parse_rate(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="RATE") from None
    if concurrency is not None and domain is None:
        raise click.UsageError("--concurrency goes with --domain")
    from drain.worker.dispatch import ensure_tokens

    client = obj.client.redis
    if burst is not None:
        ratelimit.set_burst(client, burst)
    held = "; a rate or 'unlimited' lets it go again" if ratelimit.holds(per_second) else ""
    if domain is not None:
        ratelimit.set_domain(client, domain, per_second)
        if concurrency is not None:
            ratelimit.set_concurrency(client, domain, concurrency)
        if not ratelimit.holds(per_second):
            obj.client.store.unpark(domain)  # mail a cap of 0 parked goes back to ready
        said = safe(f"{domain}: {ratelimit.format_rate(per_second)}"
                    + (f", {concurrency} at once" if concurrency else "") + held)
    else:
        ratelimit.set_global(client, per_second)
        said = f"global: {ratelimit.format_rate(per_second)}{held}"
    ensure_tokens(client, obj.settings)
    if as_json:
        emit({"domain": domain, "rate": per_second, "concurrency": concurrency, "burst": burst,
              "held": ratelimit.holds(per_second)})
    else:
        click.echo(said)


@cli.command()
@click.option("--intake", "intake_only", is_flag=True,
              help="Close the SMTP ingress instead (it answers 421); delivery goes on.")
@click.option("--domain", callback=_domain_option, help="Pause only delivery to this destination domain.")
@click.option("--json", "as_json", is_flag=True, help='Print {"scope", "name", "paused"} as JSON.')
@pass_ctx
def pause(obj: Context, intake_only: bool, domain: str | None, as_json: bool) -> None:
    """Stop delivery on all workers (accepting goes on); with --intake, stop SMTP intake instead."""
    if domain:
        ratelimit.pause_domain(obj.client.redis, domain)
        scope, said = "domain", safe(f"delivery to {domain.lower()} paused")
    elif intake_only:
        intake.pause(obj.client.redis)
        scope, said = "intake", "intake paused (SMTP ingress answers 421)"
    else:
        ratelimit.pause(obj.client.redis)
        scope, said = "delivery", "delivery paused"
    if as_json:
        emit({"scope": scope, "name": domain.lower() if domain else None, "paused": True})
    else:
        click.echo(said)


@cli.command()
@click.option("--intake", "intake_only", is_flag=True, help="Reopen the SMTP ingress instead.")
@click.option("--domain", callback=_domain_option, help="Resume only delivery to this destination domain.")
@click.option("--json", "as_json", is_flag=True, help='Print {"scope", "name", "paused", "unparked"} as JSON.')
@pass_ctx
def resume(obj: Context, intake_only: bool, domain: str | None, as_json: bool) -> None:
    """Start delivery again; with --intake, reopen SMTP intake instead."""
    from drain.worker.dispatch import ensure_tokens

    moved = 0
    if domain:
        ratelimit.resume_domain(obj.client.redis, domain)
        moved = obj.client.store.unpark(domain.lower())
        ensure_tokens(obj.client.redis, obj.settings)
        scope, said = "domain", safe(f"delivery to {domain.lower()} resumed ({moved} parked message(s) back to ready)")
    elif intake_only:
        intake.resume(obj.client.redis)
        scope, said = "intake", "intake resumed"
    else:
        ratelimit.resume(obj.client.redis)
        ensure_tokens(obj.client.redis, obj.settings)
        scope, said = "delivery", "delivery resumed"
    if as_json:
        emit({"scope": scope, "name": domain.lower() if domain else None, "paused": False, "unparked": moved})
    else:
        click.echo(said)


def _filter_options(func: Any) -> Any:
    func = click.option("--domain", help="Only mail to this recipient domain.")(func)
    func = click.option("--sender", help="Only mail from this envelope sender.")(func)
    func = click.option("--reason", help="Only this reason code (or a prefix ending in '.', e.g. header.).")(func)
    return func


def _time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@cli.group()
def quarantine() -> None:
    """Inspect, release, delete and export quarantined mail; manage quarantine rules."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
@click.option("--limit", type=click.IntRange(0), default=None,
              help=f"At most this many (default: {TTY_ROWS} on a terminal, all otherwise; 0: all).")
@_filter_options
@pass_ctx
def quarantine_list(obj: Context, as_json: bool, limit: int | None, reason: str | None, sender: str | None,
                    domain: str | None) -> None:
    """Quarantined messages, oldest first."""
    q = Quarantine(obj.client.store)
    wanted = _rows_wanted(limit, as_json)
    if as_json:
        for record in q.records(Filter(reason, sender, domain), wanted):
            emit(record.summary())
        return
    found = list(q.records(Filter(reason, sender, domain), None if wanted is None else wanted + 1))
    table = Table(title=f"quarantine ({q.count():,} held)", caption=_more_caption(len(found), wanted))
    table.add_column("id", no_wrap=True)
    table.add_column("quarantined", no_wrap=True)
    for column in ("reason", "sender", "recipients"):
        table.add_column(column, overflow="fold")
    for record in found[:wanted]:
        table.add_row(cell(record.id), _time(record.quarantined_at), cell(", ".join(record.reasons)),
                      cell(record.sender),
                      cell(", ".join(record.recipients[:3]) + (" ..." if len(record.recipients) > 3 else "")))
    out.print(table)


@quarantine.command("show")
@click.argument("msg_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (headers left out).")
@pass_ctx
def quarantine_show(obj: Context, msg_id: str, as_json: bool) -> None:
    """One quarantined message: reasons with evidence, attempts, audit trail, headers."""
    record = Quarantine(obj.client.store).get(msg_id)
    detail = record.detail()
    if as_json:
        emit(detail)
        return
    table = Table(title=cell(f"quarantined message {record.id}"), show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("sender", cell(record.sender or "<>"))
    table.add_row("recipients", cell(", ".join(record.recipients)))
    table.add_row("accepted", _time(record.accepted_at))
    table.add_row("quarantined", _time(record.quarantined_at))
    table.add_row("size", f"{record.size:,} bytes")
    table.add_row("attempts", cell(str(record.attempts) + (f" (last: {record.last_reply})" if record.last_reply
                                                            else "")))
    for finding in record.findings:
        table.add_row("reason", cell(f"{finding.get('code')}: {finding.get('detail', '')}"))
    for entry in record.audit:
        table.add_row("audit", cell(f"{_time(entry.get('at', 0))} {entry.get('actor')} {entry.get('action')}"
                                    f"{' --force' if entry.get('force') else ''} {entry.get('note', '')}"))
    out.print(table)
    head = (record.raw or b"").split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0][:4000]
    for line in head.decode("utf-8", "replace").split("\n"):
        click.echo(safe(line.removesuffix("\r")))


def _selected(obj: Context, ids: tuple[str, ...], reason: str | None, sender: str | None,
              domain: str | None) -> tuple[Quarantine, list[str], str]:
    q = Quarantine(obj.client.store)
    flt = Filter(reason, sender, domain)
    if ids and not flt.empty:
        raise click.UsageError("give message ids or a filter, not both")
    note = " ".join(f"--{k} {v}" for k, v in (("reason", reason), ("sender", sender), ("domain", domain)) if v)
    return q, q.select(ids, flt), note


@quarantine.command("release")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@_filter_options
@click.option("--force", is_flag=True, help="Release even if validation still fails; workers deliver it as is.")
@click.option("--dry-run", is_flag=True, help="Say what would be released, change nothing.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"released", "would_release", "ids", "still_failing", "dry_run"} as JSON.')
@pass_ctx
def quarantine_release(obj: Context, ids: tuple[str, ...], reason: str | None, sender: str | None,
                       domain: str | None, force: bool, dry_run: bool, as_json: bool) -> None:
    """Put messages back on the ready list. They are validated again first, unless --force."""
    q, chosen, note = _selected(obj, ids, reason, sender, domain)
    s = obj.settings
    failing: dict[str, list[str]] = {}
    if force:
        passing = chosen
    else:
        passing, failing = q.revalidate(chosen, validate.Limits.from_settings(s),
                                        validate.severity_with(s.quarantine_codes, s.record_codes))
    released = 0 if dry_run else q.release(passing, s.actor, force=force, note=note)
    if not dry_run and passing:
        from drain.worker.dispatch import ensure_tokens

        ensure_tokens(obj.client.redis, s)
    result = {"released": released, "would_release": len(passing) if dry_run else 0, "ids": passing,
              "still_failing": failing, "dry_run": dry_run}
    if as_json:
        emit(result)
        return
    verb = "would release" if dry_run else "released"
    click.echo(f"{verb} {len(passing) if dry_run else released} message(s)")
    for msg_id, codes in failing.items():
        click.echo(safe(f"kept {msg_id}: still fails validation ({', '.join(codes)}); use --force to release anyway"))


@quarantine.command("delete")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@_filter_options
@click.option("--dry-run", is_flag=True, help="Say what would be deleted, change nothing.")
@click.option("--json", "as_json", is_flag=True, help='Print {"deleted", "would_delete", "ids", "dry_run"} as JSON.')
@pass_ctx
def quarantine_delete(obj: Context, ids: tuple[str, ...], reason: str | None, sender: str | None,
                      domain: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete quarantined messages for good (counted as deleted)."""
    q, chosen, note = _selected(obj, ids, reason, sender, domain)
    deleted = 0 if dry_run else q.delete(chosen, obj.settings.actor, note=note)
    if as_json:
        emit({"deleted": deleted, "would_delete": len(chosen) if dry_run else 0, "ids": chosen, "dry_run": dry_run})
    else:
        click.echo(f"would delete {len(chosen)} message(s)" if dry_run else f"deleted {deleted} message(s)")


@quarantine.command("export")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@_filter_options
@click.option("--format", "fmt", type=click.Choice(["eml", "mbox"]), default="eml", show_default=True,
              help="eml: one ID.eml file per message in the --out folder; mbox: all in one --out file.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              help="A folder for .eml files (made if only its last part is missing), or the mbox file to write.")
@click.option("--force", is_flag=True, help="Replace existing files (regular files only; never a device or link).")
@click.option("--json", "as_json", is_flag=True, help='Print {"exported", "format", "out", "ids"} as JSON.')
@pass_ctx
def quarantine_export(obj: Context, ids: tuple[str, ...], reason: str | None, sender: str | None,
                      domain: str | None, fmt: str, out_path: Path, force: bool, as_json: bool) -> None:
    """Write the original bytes of quarantined messages, as .eml files or one mbox (a new file
    unless --force)."""
    q, chosen, _note = _selected(obj, ids, reason, sender, domain)
    count = q.export(chosen, fmt, out_path, force=force)
    if as_json:
        emit({"exported": count, "format": fmt, "out": str(out_path), "ids": chosen})
    else:
        click.echo(safe(f"exported {count} message(s) to {out_path}"))


@quarantine.group("rule")
def quarantine_rule() -> None:
    """Rules that quarantine matching mail, queued or yet to come."""


@quarantine_rule.command("add")
@click.option("--sender", help="Envelope sender, glob allowed (e.g. '*@bulk.example.com').")
@click.option("--domain", help="Any recipient in this domain.")
@click.option("--header", "header", help="'Name: regex' searched in that header's value(s).")
@click.option("--note", default="", help="Why, for the audit trail.")
@click.option("--dry-run", is_flag=True, help="Count the queued messages the rule would catch; add nothing.")
@click.option("--yes-all", is_flag=True,
              help="Confirm a rule that catches more than half of the queued mail (10 messages or more) "
                   "or any sender at all ('*').")
@click.option("--json", "as_json", is_flag=True, help='Print {"id", "rule", "swept"} as JSON.')
@pass_ctx
def rule_add(obj: Context, sender: str | None, domain: str | None, header: str | None, note: str,
             dry_run: bool, yes_all: bool, as_json: bool) -> None:
    """Add a rule; messages already queued that match move to quarantine now."""
    name, pattern = rules.parse_header(header) if header else (None, None)
    match: dict[str, str | None] = {"sender": sender, "domain": domain, "header": name, "pattern": pattern}
    # Refuses an empty or unusable rule before anything is counted or stored.
    probe = rules.Rule(id="-", sender=sender, domain=domain, header=name, pattern=pattern)
    matched, queued = rules.reach(obj.client.store, probe)
    confirm = rules.needs_confirmation(probe, matched, queued)
    if dry_run:
        if as_json:
            emit({"dry_run": True, "rule": probe.describe(), "would_sweep": matched, "queued": queued,
                  "needs_yes_all": confirm})
        else:
            click.echo(safe(f"rule ({probe.describe()}) would move {matched} of {queued} queued message(s) "
                            f"to quarantine" + ("; adding it needs --yes-all" if confirm else "")))
        return
    if confirm and not yes_all:
        scope = "any sender" if rules.catches_everyone(probe) else f"{matched} of {queued} queued message(s)"
        raise click.UsageError(safe(f"rule ({probe.describe()}) would catch {scope}; "
                                    "add --yes-all to add it anyway (--dry-run counts first)"))
    rule = rules.add(obj.client.redis, obj.settings.actor, note, **match)
    swept = rules.sweep(obj.client.store, rule)
    if as_json:
        emit({"id": rule.id, "rule": rule.describe(), "swept": swept})
    else:
        click.echo(safe(f"rule {rule.id} ({rule.describe()}): {swept} queued message(s) moved to quarantine"))


@quarantine_rule.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one per rule.")
@pass_ctx
def rule_list(obj: Context, as_json: bool) -> None:
    """Rules in force, oldest first: what each matches, who added it, when and why."""
    for rule in rules.load(obj.client.redis):
        if as_json:
            emit({"id": rule.id, "sender": rule.sender, "domain": rule.domain, "header": rule.header,
                  "pattern": rule.pattern, "actor": rule.actor, "created_at": rule.created_at, "note": rule.note})
        else:
            click.echo(safe(f"{rule.id}: {rule.describe()}  (by {rule.actor}, {_time(rule.created_at)}) {rule.note}"))


@quarantine_rule.command("remove")
@click.argument("rule_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help='Print {"id", "removed"} as JSON.')
@pass_ctx
def rule_remove(obj: Context, rule_id: str, as_json: bool) -> None:
    """Remove rule ID (see `rule list`); mail it already quarantined stays there."""
    if not rules.remove(obj.client.redis, rule_id):
        raise InputError(f"no rule {rule_id}")
    if as_json:
        emit({"id": rule_id, "removed": True})
    else:
        click.echo(safe(f"rule {rule_id} removed"))


@cli.command()
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="Address to listen on (env DRAIN_SMTPD_LISTEN; default 127.0.0.1:2526).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Least severe log records written to standard error.")
@click.option("--processes", type=click.IntRange(1, 256), default=None,
              help="Ingress processes sharing the address (default: the number of cores).")
@pass_ctx
def smtpd(obj: Context, listen: str | None, log_level: str, processes: int | None) -> None:
    """Take mail over SMTP and queue it; 250 to DATA only once Redis holds the message."""
    from drain.intake.smtpd import Ingress
    from drain.settings import parse_listen

    try:
        host, port = parse_listen(listen or obj.settings.smtpd_listen, "--listen")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    logging_setup.configure(obj.settings.log_format, "smtpd")
    logging.getLogger("drain").setLevel(log_level.upper())
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's per-command chatter
    import os

    from drain.intake.smtpd_pool import Pool

    processes = processes or os.cpu_count() or 1
    server = Ingress(obj.client, host, port) if processes == 1 else Pool(obj.client, host, port, processes)
    logging_setup.announce(startup_line("smtpd", obj.settings, obj.client.redis))  # after the Pool's bind
    server.serve(on_ready=lambda s: logging_setup.announce(f"drain smtpd: listening on {s.describe()}"))


@cli.command()
@click.option("--listen", metavar="HOST:PORT", default="127.0.0.1:8025", show_default=True,
              help="Address of the status page (':8025' for all addresses).")
@click.option("--refresh", "refresh_s", type=FiniteFloat(0.2, 300), default=2.0, show_default=True,
              help="Seconds between reads of Redis.")
@click.option("--show-messages", is_flag=True,
              help="Show senders, recipients and subjects of quarantined mail (an internal page only).")
@click.option("--hide-messages", is_flag=True, hidden=True, help="The default; kept for old scripts.")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Least severe log records written to standard error.")
@pass_ctx
def serve(obj: Context, listen: str, refresh_s: float, show_messages: bool, hide_messages: bool,
          log_level: str) -> None:
    """Serve a read-only status page (/), /status.json, /metrics and /healthz; no login, GET only."""
    from drain.observe.web import StatusServer
    from drain.settings import parse_listen
    from drain.store.connection import resolve_url

    try:
        host, port = parse_listen(listen, "--listen")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    logging_setup.configure(obj.settings.log_format, "serve")
    logging.getLogger("drain").setLevel(log_level.upper())
    try:
        server = StatusServer(resolve_url(obj.settings), obj.settings, host, port, refresh_s,
                              show_messages and not hide_messages)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    from drain.store.connection import client_for

    logging_setup.announce(startup_line("serve", obj.settings, client_for(resolve_url(obj.settings))))
    logging_setup.announce(f"drain serve: {server.describe()}; /status.json /metrics /healthz")
    server.serve_forever()


@cli.group()
def server() -> None:
    """The embedded Redis kept under DRAIN_HOME."""


@server.command("stop")
@click.option("--json", "as_json", is_flag=True, help='Print {"stopped"} as JSON.')
@pass_ctx
def server_stop(obj: Context, as_json: bool) -> None:
    """Shut the embedded Redis down (its data stays on disk)."""
    stopped = embedded.stop(obj.settings.home)
    if as_json:
        emit({"stopped": stopped})
    else:
        click.echo("stopped" if stopped else "not running")


@server.command("status")
@click.option("--json", "as_json", is_flag=True, help='Print {"running", "url"} as JSON.')
@pass_ctx
def server_status(obj: Context, as_json: bool) -> None:
    """Whether the embedded Redis under DRAIN_HOME runs, and its URL."""
    running = embedded.is_running(obj.settings.home)
    if as_json:
        emit({"running": running, "url": embedded.url_for(obj.settings.home)})
    else:
        click.echo(f"{'running' if running else 'not running'}: {embedded.url_for(obj.settings.home)}")


@cli.command()
@click.option("--messages", "-n", default=3000, show_default=True, type=click.IntRange(1, 10_000_000),
              help="Messages in the seeded backlog.")
@click.option("--rate", "rate_text", default="500/s", show_default=True, help="Delivery rate for the drain.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--malformed", default=0.03, show_default=True, type=click.FloatRange(0, 1),
              help="Share of malformed messages in the backlog.")
@pass_ctx
def demo(obj: Context, messages: int, rate_text: str, workers: int, malformed: float) -> None:
    """Seed a backlog with malformed mail and drain it at a set rate into a local SMTP sink."""
    from drain.demo.run import run_demo

    try:
        per_second = ratelimit.parse_rate(rate_text)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--rate") from None
    if ratelimit.holds(per_second):
        raise click.BadParameter("0 would hold the demo's delivery for good", param_hint="--rate")
    ok = run_demo(obj.settings, messages=messages, rate=per_second, workers=workers, malformed=malformed,
                  console=out)
    if not ok:
        sys.exit(1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help='One JSON document: {"producer": "ACL SETUSER ...", ...}.')
def acl(as_json: bool) -> None:
    """Redis ACL rules for drain's roles: producer, worker, operator, viewer (see README)."""
    from drain.store import acl as acl_rules

    found = acl_rules.all_roles()
    if as_json:
        emit(found)
        return
    for command in found.values():
        click.echo(command)


def main(argv: list[str] | None = None) -> None:
    logging_setup.configure("text", "cli", level=logging.WARNING)
    try:
        cli.main(args=argv, prog_name="drain", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        fail("aborted")
        sys.exit(130)
    except click.UsageError as exc:
        fail(f"error: {exc.format_message()}")
        sys.exit(2)
    except click.ClickException as exc:
        fail(f"error: {exc.format_message()}")
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        fail(f"error: {exc}")
        sys.exit(2)
    except DrainError as exc:
        fail(f"error: {exc}")
        sys.exit(1)
    except redis.RedisError as exc:
        fail(f"error: Redis: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        fail("interrupted")
        sys.exit(130)

