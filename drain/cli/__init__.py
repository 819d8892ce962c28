"""The `drain` command. Usage errors exit 2 with one line; --json writes only JSON to stdout.

The group and the error mapping live here; the commands live by family in queue, flow,
quarantine and serve, with shared options in options and output helpers in render."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from drain import logging_setup
from drain.cli.options import redis_url_option
from drain.errors import ConfigError, DrainError

__all__ = ["TTY_ROWS", "Context", "cli", "main"]
# Commands whose standard output is a log (DRAIN_EVENT_LOG=- writes there).
LONG_RUNNING = frozenset({"worker", "smtpd", "drain", "serve", "server", "demo"})
# Each command: the module of drain.cli that defines it and its name there. A module is
# imported when one of its commands is asked for (run, or its help shown), so `drain status`
# does not load what `drain worker` or `drain quarantine` need.
COMMANDS = {
    "acl": "serve:acl", "audit": "pausing:audit", "backlog": "queue:backlog", "bounce": "actions:bounce",
    "breaker": "flow:breaker", "cells": "cells:cells", "check": "queue:check", "deferred": "queue:deferred",
    "delete": "actions:delete", "demo": "serve:demo", "drain": "serve:drain_session", "enqueue": "queue:enqueue",
    "flush": "actions:flush", "hold": "actions:hold", "log": "trace:log", "pause": "pausing:pause",
    "quarantine": "quarantine:quarantine", "rate": "flow:rate", "release": "actions:release",
    "resume": "pausing:resume", "route": "routes:route", "serve": "serve:serve", "server": "serve:server",
    "show": "trace:show", "smtpd": "serve:smtpd", "status": "queue:status", "tenant": "tenant:tenant",
    "trace": "trace:trace", "worker": "serve:worker",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when asked for (click's lazy loading of
    subcommands: list_commands names them, get_command loads one)."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, name = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(f"drain.cli.{module}"), name)
            if not isinstance(command, click.Command):
                raise TypeError(f"drain.cli.{module}.{name} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                               list[str]]:
        if args and args[0] not in self.lazy and args[0] not in self.commands:
            for name in self.lazy:  # a name drain does not know: click suggests from every command
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


def fail(message: str) -> None:
    from drain.cli.render import fail as one_line
    one_line(message)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@redis_url_option
@click.version_option(package_name="drain")
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None) -> None:
    """drain: validate, quarantine and deliver a mail backlog at a rate you control."""
    from drain.cli.options import Context

    ctx.obj = Context(redis_url)
    if not ctx.obj.settings.event_log:
        return  # no events written (eventlog, with redis, is not imported for a command's help)
    from drain.store import eventlog

    # DRAIN_EVENT_LOG=- : an operator command's standard output is its own answer, so its
    # events go to standard error; the long-running processes keep standard output.
    eventlog.operator_command(ctx.invoked_subcommand not in LONG_RUNNING)
    ctx.call_on_close(lambda: eventlog.operator_command(False))


def __getattr__(name: str) -> Any:
    """TTY_ROWS and Context, loaded with their modules when asked for."""
    if name == "TTY_ROWS":
        from drain.cli.render import TTY_ROWS
        return TTY_ROWS
    if name == "Context":
        from drain.cli.options import Context
        return Context
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    logging_setup.configure("text", "cli", level=logging.WARNING)
    try:
        _main(argv)
    except Exception as exc:
        redis = sys.modules.get("redis")  # not loaded: the error cannot be one of its own
        if redis is None or not isinstance(exc, redis.RedisError):
            raise
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            fail("error: Redis is over its maxmemory and refuses writes (reads still work): free memory with "
                 "`drain quarantine delete`, or raise Redis's maxmemory (docs/runbook.md, Redis is full)")
        else:
            fail(f"error: Redis: {exc}")
        sys.exit(1)


def _main(argv: list[str] | None) -> None:
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
    except KeyboardInterrupt:
        fail("interrupted")
        sys.exit(130)
