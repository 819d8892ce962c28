"""The `drain` command. Usage errors exit 2 with one line; --json writes only JSON to stdout."""

from __future__ import annotations

import json
import logging
import mailbox
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import redis
from email_validator import EmailNotValidError, validate_email
from rich.console import Console
from rich.table import Table

from drain import embedded, intake, ratelimit, validate
from drain.api import Client, Submission
from drain.errors import ConfigError, DrainError, InputError
from drain.message import envelope_from_headers
from drain.settings import Settings
from drain.status import read as read_status

out = Console()


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
    """One line on standard error, whatever the message held."""
    click.echo(f"drain: {' '.join(message.split())}", err=True)


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
    limits = validate.Limits(s.max_message_bytes, s.max_header_count, s.max_mime_depth, s.max_mime_parts,
                             s.allow_special_domains)
    for path in paths:
        raw = _read(path)
        verdict = validate.check(raw, envelope_from_headers(raw), limits)
        if as_json:
            emit({"path": path, "verdict": verdict.label, "reasons": verdict.reasons,
                  "recorded": verdict.recorded, "findings": [f.as_dict() for f in verdict.findings]})
        else:
            detail = "; ".join(f"{f.code} ({f.detail})" if f.detail else f.code for f in verdict.findings
                               if f.code in verdict.reasons)
            click.echo(f"{path}: {verdict.label}" + (f": {detail}" if detail else ""))


def _read(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
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
@click.option("--json", "as_json", is_flag=True, help="Print {accepted, rejected, ids} as JSON.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@pass_ctx
def enqueue(obj: Context, sender: str | None, recipients: tuple[str, ...], mbox: bool, as_json: bool,
            paths: tuple[str, ...]) -> None:
    """Queue message files (or - for standard input); prints their ids."""
    if sender is not None and sender != "":
        _address(sender, "--from")
    for rcpt in recipients:
        _address(rcpt, "--to")
    for path in paths:
        if path != "-" and not Path(path).is_file():
            raise click.BadParameter(f"no such file: {path}", param_hint="PATH")
    names: list[str] = []

    def submissions() -> Iterator[Submission]:
        for path in paths:
            if mbox:
                box = mailbox.mbox(path, create=False)
                for key in box.iterkeys():
                    names.append(f"{path}#{key}")
                    yield Submission(box.get_bytes(key), sender, recipients or None)
            else:
                names.append(path)
                yield Submission(_read(path), sender, recipients or None)

    result = obj.client.enqueue_many(submissions())
    for index, why in result.rejected:
        fail(f"rejected {names[index]}: {why}")
    if as_json:
        emit({"accepted": len(result.ids), "rejected": len(result.rejected), "ids": result.ids})
    else:
        for msg_id in result.ids:
            click.echo(msg_id)
        click.echo(f"accepted {len(result.ids)}, rejected {len(result.rejected)}", err=True)
    if result.rejected:
        sys.exit(1)


@cli.command()
@click.option("--burst", is_flag=True, help="Stop when nothing is left to do now.")
@click.option("--processes", "-p", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes on this machine (an RQ worker pool when more than one).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@pass_ctx
def worker(obj: Context, burst: bool, processes: int, log_level: str) -> None:
    """Run RQ workers that validate, quarantine and deliver."""
    from drain.delivery import RelayConfig
    from workers.worker import run

    RelayConfig.from_url(obj.settings.relay)  # a bad relay URL fails here, in one line
    client = obj.client.redis
    run(client, obj.settings, processes=processes, burst=burst, logging_level=log_level.upper())


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@pass_ctx
def status(obj: Context, as_json: bool) -> None:
    """The books (every state's count) and the pace."""
    st = read_status(obj.client.store)
    data = st.as_dict()
    if as_json:
        emit(data)
        return
    table = Table(title="drain status", show_header=False)
    for key in ("accepted", "ready", "deferred", "in_flight", "delivered", "bounced", "quarantined", "deleted"):
        table.add_row(key.replace("_", " "), f"{data[key]:,}")
    table.add_row("books balance", "yes" if st.books.balanced else "NO")
    table.add_row("oldest age", f"{st.oldest_age_s:,.1f} s")
    table.add_row("rate", f"{st.rate_per_s:,.1f} msg/s")
    table.add_row("eta", "-" if st.eta_s is None else f"{st.eta_s:,.0f} s")
    if ratelimit.is_paused(obj.client.redis):
        table.add_row("delivery", "PAUSED")
    if intake.is_paused(obj.client.redis):
        table.add_row("intake (SMTP)", "PAUSED")
    out.print(table)


@cli.group()
def rate() -> None:
    """Show or set the delivery rate, live for all workers."""


@rate.command("show")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def rate_show(obj: Context, as_json: bool) -> None:
    value = ratelimit.get_global(obj.client.redis)
    if as_json:
        emit({"global": value, "domains": {}, "paused": ratelimit.is_paused(obj.client.redis)})
    else:
        click.echo(f"global: {ratelimit.format_rate(value)}")


@rate.command("set")
@click.argument("value", metavar="RATE")
@click.option("--domain", help="Per-domain rates are not available yet.")
@pass_ctx
def rate_set(obj: Context, value: str, domain: str | None) -> None:
    """Set RATE like 500/s, 30000/m, or 'unlimited'."""
    if domain:
        raise click.UsageError("per-domain rates are not available yet")
    try:
        per_second = ratelimit.parse_rate(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="RATE") from None
    ratelimit.set_global(obj.client.redis, per_second)
    click.echo(f"global: {ratelimit.format_rate(per_second)}")


@cli.command()
@click.option("--intake", "intake_only", is_flag=True,
              help="Close the SMTP ingress instead (it answers 421); delivery goes on.")
@pass_ctx
def pause(obj: Context, intake_only: bool) -> None:
    """Stop delivery on all workers (accepting goes on); with --intake, stop SMTP intake instead."""
    if intake_only:
        intake.pause(obj.client.redis)
        click.echo("intake paused (SMTP ingress answers 421)")
        return
    ratelimit.pause(obj.client.redis)
    click.echo("delivery paused")


@cli.command()
@click.option("--intake", "intake_only", is_flag=True, help="Reopen the SMTP ingress instead.")
@pass_ctx
def resume(obj: Context, intake_only: bool) -> None:
    """Start delivery again; with --intake, reopen SMTP intake instead."""
    from drain.dispatch import ensure_tokens

    if intake_only:
        intake.resume(obj.client.redis)
        click.echo("intake resumed")
        return
    ratelimit.resume(obj.client.redis)
    ensure_tokens(obj.client.redis, obj.settings)
    click.echo("delivery resumed")


@cli.command()
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="Address to listen on (env DRAIN_SMTPD_LISTEN; default 127.0.0.1:2526).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@pass_ctx
def smtpd(obj: Context, listen: str | None, log_level: str) -> None:
    """Take mail over SMTP and queue it; 250 to DATA only once Redis holds the message."""
    from drain.ingress import Ingress
    from drain.settings import parse_listen

    try:
        host, port = parse_listen(listen or obj.settings.smtpd_listen, "--listen")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    logging.getLogger("drain").setLevel(log_level.upper())
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's per-command chatter
    server = Ingress(obj.client, host, port)
    server.serve(on_ready=lambda s: click.echo(f"drain smtpd: listening on {s.describe()}", err=True))


@cli.group()
def server() -> None:
    """The embedded Redis kept under DRAIN_HOME."""


@server.command("stop")
@pass_ctx
def server_stop(obj: Context) -> None:
    """Shut the embedded Redis down (its data stays on disk)."""
    stopped = embedded.stop(obj.settings.home)
    click.echo("stopped" if stopped else "not running")


@server.command("status")
@pass_ctx
def server_status(obj: Context) -> None:
    running = embedded.is_running(obj.settings.home)
    click.echo(f"{'running' if running else 'not running'}: {embedded.url_for(obj.settings.home)}")


@cli.command()
@click.option("--messages", "-n", default=3000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--rate", "rate_text", default="500/s", show_default=True, help="Delivery rate for the drain.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--malformed", default=0.03, show_default=True, type=click.FloatRange(0, 1),
              help="Share of malformed messages in the backlog.")
@pass_ctx
def demo(obj: Context, messages: int, rate_text: str, workers: int, malformed: float) -> None:
    """Seed a backlog with malformed mail and drain it at a set rate into a local SMTP sink."""
    from drain.demo import run_demo

    try:
        per_second = ratelimit.parse_rate(rate_text)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--rate") from None
    ok = run_demo(obj.settings, messages=messages, rate=per_second, workers=workers, malformed=malformed,
                  console=out)
    if not ok:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
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

