"""What the commands share on the way out: one-line errors, `emit` (one JSON document a line),
the console that prints tables, the row limit on a terminal and in-place refresh. Text that
came from mail, relays or Redis goes through drain.cli.terminal (`safe`, `cell`) first."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console, RenderableType

from drain.cli.terminal import clip
from drain.errors import InputError

# Scripts and pipes get wide tables rather than tables squeezed to 80 columns.
out = Console(width=None if sys.stdout is not None and sys.stdout.isatty() else 200)

# Lists stop after this many rows on a terminal unless --limit says otherwise (--limit 0: all);
# pipes and --json get everything.
TTY_ROWS = 50


# The longest error line written; a message quoting hostile text at length is cut there.
ERROR_CHARS = 1000


def fail(message: str) -> None:
    """One line on standard error, whatever the message held (controls shown as escapes, cut
    to ERROR_CHARS)."""
    click.echo(f"drain: {clip(' '.join(message.split()), ERROR_CHARS)}", err=True)


def emit(data: Any) -> None:
    click.echo(json.dumps(data, separators=(",", ":")))


def rows_wanted(limit: int | None, as_json: bool) -> int | None:
    if limit == 0:
        return None
    if limit is None and not as_json and sys.stdout.isatty():
        return TTY_ROWS
    return limit


def more_caption(found: int, wanted: int | None) -> str | None:
    """Says that rows were left out (found holds one row more than wanted when there are more)."""
    if wanted is None or found <= wanted:
        return None
    return f"first {wanted:,} shown; --limit N for more, --limit 0 for all"


def live(render: Callable[[], RenderableType], watch_s: float | None) -> None:
    """Print once, or refresh in place every watch_s seconds until Ctrl-C."""
    if watch_s is None:
        out.print(render())
        return
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    last = render()
    down_since: float | None = None
    with Live(last, console=out, refresh_per_second=4) as shown:
        try:
            while True:
                time.sleep(max(0.2, watch_s))
                try:
                    last = render()
                except Exception as exc:  # Redis gone a moment (a restart, a failover): keep watching
                    redis = sys.modules.get("redis")
                    if redis is None or not isinstance(exc, redis.RedisError):
                        raise
                    down_since = down_since or time.time()
                    shown.update(Group(last, Text(
                        f"Redis unreachable since {time.strftime('%H:%M:%S', time.localtime(down_since))}: "
                        f"{clip(' '.join(str(exc).split()), 200)}; the figures above are older; retrying")))
                    continue
                down_since = None
                shown.update(last)
        except KeyboardInterrupt:
            pass


def when(ts: float) -> str:
    """A timestamp in local time, or '-' for none."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def report(as_json: bool, doc: Any, line: str) -> None:
    """A command's result: doc as one JSON document with --json, else line (already safe)."""
    if as_json:
        emit(doc)
    else:
        click.echo(line)


def none_released(action: str, kept: int, released: int, dry_run: bool) -> None:
    """Exit 1 when a release released nothing because every message it took still fails
    validation: it exited 0 after "released 0 message(s)", and `drain release ID || alert`
    took that for done (as "0 matched" is exit 1)."""
    if action == "release" and kept and not released and not dry_run:
        raise InputError(f"nothing released: {kept} message(s) still fail validation (--force releases them anyway)")
