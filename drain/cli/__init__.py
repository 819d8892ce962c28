"""The `drain` command. Usage errors exit 2 with one line; --json writes only JSON to stdout.

The group and the error mapping live here; the commands live by family in queue, flow,
quarantine and serve, with shared options in options and output helpers in render."""

from __future__ import annotations

import logging
import os
import sys

import click
import redis

from drain import logging_setup
from drain.cli import actions, cells, flow, pausing, quarantine, queue, routes, serve, tenant, trace
from drain.cli.options import Context, redis_url_option
from drain.cli.render import TTY_ROWS, fail
from drain.errors import ConfigError, DrainError
from drain.store import eventlog

__all__ = ["TTY_ROWS", "Context", "cli", "main"]
# Commands whose standard output is a log (DRAIN_EVENT_LOG=- writes there).
LONG_RUNNING = frozenset({"worker", "smtpd", "drain", "serve", "server", "demo"})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@redis_url_option
@click.version_option(package_name="drain")
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None) -> None:
    """drain: validate, quarantine and deliver a mail backlog at a rate you control."""
    ctx.obj = Context(redis_url)
    # DRAIN_EVENT_LOG=- : an operator command's standard output is its own answer, so its
    # events go to standard error; the long-running processes keep standard output.
    eventlog.operator_command(ctx.invoked_subcommand not in LONG_RUNNING)
    ctx.call_on_close(lambda: eventlog.operator_command(False))


for _command in (queue.check, queue.enqueue, queue.status, queue.backlog, queue.deferred,
                 flow.rate, pausing.pause, pausing.resume, flow.breaker, quarantine.quarantine,
                 serve.worker, serve.smtpd, serve.serve, serve.server, serve.drain_session, serve.demo, serve.acl,
                 actions.flush, actions.bounce, actions.delete, actions.hold, actions.release, pausing.audit,
                 cells.cells, tenant.tenant, trace.log, trace.trace, trace.show):
    cli.add_command(_command)
cli.add_command(routes.route)


def _closed_streams() -> None:
    """A standard stream the caller closed (`drain enqueue - <&-`, `>&-` in a cron line) is
    /dev/null: Python leaves it None, and its first use raised a traceback."""
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, mode))  # noqa: SIM115 (open for the life of the process)


def main(argv: list[str] | None = None) -> None:
    _closed_streams()
    logging_setup.configure("text", "cli", level=logging.WARNING)
    try:
        cli.main(args=argv, prog_name="drain", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        fail("aborted")
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        # `drain`, `drain quarantine`: the help, as written (folded into one error line, it
        # was unreadable and, past the error's length limit, cut), and the usage exit.
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
        sys.exit(2)
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
    except redis.exceptions.OutOfMemoryError:
        fail("error: Redis is over its maxmemory and refuses writes (reads still work): free memory with "
             "`drain quarantine delete`, or raise Redis's maxmemory (docs/runbook.md, Redis is full)")
        sys.exit(1)
    except redis.RedisError as exc:
        fail(f"error: Redis: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        fail("interrupted")
        sys.exit(130)
