"""The long-running and setup commands: worker, smtpd, serve, the `drain` session, demo,
server (the embedded Redis) and acl."""

from __future__ import annotations

import logging
import os
import sys

import click

from drain import logging_setup
from drain.cli.options import (
    Context,
    FiniteFloat,
    Whole,
    json_option,
    listen_value,
    log_level_option,
    moving_rate,
    pass_ctx,
)
from drain.cli.render import emit, out, report
from drain.observe.status import startup_line
from drain.store import embedded


@click.command()
@click.option("--burst", is_flag=True, help="Stop when nothing is left to do now.")
@click.option("--processes", "-p", default=1, show_default=True, type=Whole(1, 256),
              help="Worker processes on this machine (an RQ worker pool when more than one).")
@click.option("--cell", "cell_name", default=None, metavar="NAME",
              help="With several cells: serve only this one (c0, c1, ...); default: every cell, "
                   "--processes each.")
@log_level_option("INFO")
@pass_ctx
def worker(obj: Context, burst: bool, processes: int, cell_name: str | None, log_level: str) -> None:
    """Run RQ workers that validate, quarantine and deliver."""
    from drain.store.cells import cells_of
    from drain.store.connection import connect_patiently
    from drain.worker.delivery import RelayConfig
    from drain.worker.rqworker import run

    RelayConfig.from_url(obj.settings.relay)  # a bad relay URL fails here, in one line
    settings = obj.settings
    if cell_name is not None or obj.multi:
        named = {c.name: c for c in cells_of(settings)}
        if cell_name is not None and cell_name not in named:
            raise click.BadParameter(f"no cell {cell_name!r} (cells: {', '.join(named) or 'none'})",
                                     param_hint="--cell")
        if cell_name is None:
            from drain.cli.cellworkers import run_all

            sys.exit(run_all(settings, processes, burst, log_level.upper()))
        settings = named[cell_name].settings(settings)
    logging_setup.configure(settings.log_format, "worker")
    client = connect_patiently(settings)  # waits (and logs) while Redis is down
    logging_setup.announce(startup_line("worker", settings, client))
    run(client, settings, processes=processes, burst=burst, logging_level=log_level.upper())


@click.command("drain")
@click.option("--rate", "rate_text", default=None, help="Set the global rate first (e.g. 500/s, unlimited).")
@click.option("--processes", "-p", default=2, show_default=True, type=Whole(1, 256),
              help="Worker processes to run for the session.")
@pass_ctx
def drain_session(obj: Context, rate_text: str | None, processes: int) -> None:
    """Drain the queue now: workers, a live progress bar, ETA; Ctrl-C stops cleanly."""
    from drain.cli.session import run_session
    from drain.worker.delivery import RelayConfig

    per_second = None
    if rate_text is not None:
        per_second = moving_rate(rate_text, "--rate", "0 would hold delivery for good (to hold it: drain rate set 0)")
    RelayConfig.from_url(obj.settings.relay)
    cells = None
    if obj.multi:  # a worker group per cell; the progress and the rate over all of them
        from drain.cli.cellops import CellsBooks

        cells = CellsBooks(obj)
    if not run_session(obj.client, per_second, rate_text is not None, processes, out, cells):
        sys.exit(1)


@click.command()
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="Address to listen on (env DRAIN_SMTPD_LISTEN; default 127.0.0.1:2526).")
@log_level_option("INFO")
@click.option("--processes", type=Whole(1, 256), default=None,
              help="Ingress processes sharing the address (default: the number of cores).")
@pass_ctx
def smtpd(obj: Context, listen: str | None, log_level: str, processes: int | None) -> None:
    """Take mail over SMTP and queue it; 250 to DATA only once Redis holds the message."""
    from drain.intake.smtpd import Ingress

    host, port = listen_value(listen) if listen else obj.settings.smtpd_listen
    logging_setup.configure(obj.settings.log_format, "smtpd")
    logging.getLogger("drain").setLevel(log_level.upper())
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's per-command chatter
    from drain.intake.smtpd_pool import Pool

    processes = processes or os.cpu_count() or 1
    server = Ingress(obj.client, host, port) if processes == 1 else Pool(obj.client, host, port, processes)
    logging_setup.announce(startup_line("smtpd", obj.settings, obj.client.redis))  # after the Pool's bind
    server.serve(on_ready=lambda s: logging_setup.announce(f"drain smtpd: listening on {s.describe()}"))


@click.command()
@click.option("--listen", metavar="HOST:PORT", default="127.0.0.1:8025", show_default=True,
              help="Address of the status page (':8025' for all addresses).")
@click.option("--refresh", "refresh_s", type=FiniteFloat(0.2, 300), default=2.0, show_default=True,
              help="Seconds between reads of Redis.")
@click.option("--show-messages", is_flag=True,
              help="Show senders, recipients and subjects of quarantined mail (an internal page only).")
@click.option("--hide-messages", is_flag=True, hidden=True, help="The default; kept for old scripts.")
@log_level_option("WARNING")
@pass_ctx
def serve(obj: Context, listen: str, refresh_s: float, show_messages: bool, hide_messages: bool,
          log_level: str) -> None:
    """Serve a read-only status page (/), /status.json, /metrics and /healthz; no login, GET only."""
    from drain.observe.http import StatusServer
    from drain.store.connection import resolve_url

    host, port = listen_value(listen)
    logging_setup.configure(obj.settings.log_format, "serve")
    logging.getLogger("drain").setLevel(log_level.upper())
    url = obj.settings.redis_url if obj.multi and obj.settings.redis_url else resolve_url(obj.settings)
    try:
        server = StatusServer(url, obj.settings, host, port, refresh_s, show_messages and not hide_messages)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    logging_setup.announce(startup_line("serve", obj.settings, server.client))
    logging_setup.announce(f"drain serve: {server.describe()}; /status.json /metrics /healthz")
    server.serve_forever()


@click.group()
def server() -> None:
    """The embedded Redis kept under DRAIN_HOME."""


@server.command("stop")
@json_option('Print {"stopped"} as JSON.')
@pass_ctx
def server_stop(obj: Context, as_json: bool) -> None:
    """Shut the embedded Redis down (its data stays on disk)."""
    stopped = embedded.stop(obj.settings.home)
    report(as_json, {"stopped": stopped}, "stopped" if stopped else "not running")


@server.command("status")
@json_option('Print {"running", "url"} as JSON.')
@pass_ctx
def server_status(obj: Context, as_json: bool) -> None:
    """Whether the embedded Redis under DRAIN_HOME runs, and its URL."""
    running = embedded.is_running(obj.settings.home)
    url = embedded.url_for(obj.settings.home)
    report(as_json, {"running": running, "url": url}, f"{'running' if running else 'not running'}: {url}")


@click.command()
@click.option("--messages", "-n", default=3000, show_default=True, type=Whole(1, 10_000_000),
              help="Messages in the seeded backlog.")
@click.option("--rate", "rate_text", default="500/s", show_default=True, help="Delivery rate for the drain.")
@click.option("--workers", default=2, show_default=True, type=Whole(1, 64), help="Worker processes.")
@click.option("--malformed", default=0.03, show_default=True, type=FiniteFloat(0, 1),
              help="Share of malformed messages in the backlog.")
@pass_ctx
def demo(obj: Context, messages: int, rate_text: str, workers: int, malformed: float) -> None:
    """Seed a backlog with malformed mail and drain it at a set rate into a local SMTP sink."""
    from drain.demo.run import STALL_LIMIT_S, run_demo

    per_second = moving_rate(rate_text, "--rate", "0 would hold the demo's delivery for good")
    if per_second is not None and per_second * STALL_LIMIT_S < 2:
        # Slower, the demo ended "stopped: no progress for 60s" between two deliveries.
        raise click.BadParameter(f"the demo stops when nothing is delivered for {STALL_LIMIT_S:g} s:"
                                 f" give at least {120 / STALL_LIMIT_S:g}/m", param_hint="--rate")
    ok = run_demo(obj.settings, messages=messages, rate=per_second, workers=workers, malformed=malformed,
                  console=out)
    if not ok:
        sys.exit(1)


@click.command()
@json_option('One JSON document: {"producer": "ACL SETUSER ...", ...}.')
def acl(as_json: bool) -> None:
    """Redis ACL rules for drain's roles: producer, worker, operator, viewer (see README)."""
    from drain.store import acl as acl_rules

    found = acl_rules.all_roles()
    if as_json:
        emit(found)
        return
    for command in found.values():
        click.echo(command)

