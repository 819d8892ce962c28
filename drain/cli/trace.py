"""Commands on one message's story: `drain log` (the delivery log), `drain trace` (find
messages and print their events) and `drain show` (where one message is now).

Everything shown came from a sender or a relay: text goes through terminal.safe, JSON is
escaped by json.dumps, and `show --raw` writes the bytes unchanged only to a pipe or file
(on a terminal, line by line with controls shown as escapes)."""

from __future__ import annotations

import itertools
import json
import sys
import time
from typing import Any

import click

import drain.cli.cellops as cellops
from drain.cli.cellcmds import log_since
from drain.cli.cellcmds import show as cells_show
from drain.cli.cellcmds import trace as cells_trace
from drain.cli.options import MESSAGE_ID, Context, Whole, pass_ctx
from drain.cli.render import emit, fail
from drain.cli.terminal import safe
from drain.errors import InputError
from drain.trace import history, logview, when, where

# How often `drain log --follow` tries Redis again while it is unreachable.
FOLLOW_RETRY_S = 1.0


def _time(_ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return when.parse(value)
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{param.name}") from None


def _echo_event(doc: dict[str, Any], as_json: bool) -> None:
    click.echo(logview.json_line(doc) if as_json else safe(logview.text_line(doc)))


@click.command("log")
@click.option("--follow", "-f", is_flag=True, help="keep printing events as they happen")
@click.option("--since", callback=_time, help="from this time: ISO 8601, unix seconds, or ago (15m, 2h, 7d)")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: event, time, id, message_id, ...")
@click.option("--count", type=Whole(min=1), help="stop after this many events")
@pass_ctx
def log(obj: Context, follow: bool, since: float | None, as_json: bool, count: int | None) -> None:
    """The delivery log: one line per event, with queue id and Message-ID."""
    reader = logview.Reader(obj.client.redis, obj.settings.trace_retention_s)
    shown = 0
    if since is not None or not follow:
        for doc in log_since(obj, since) if obj.multi else reader.since(since):
            _echo_event(doc, as_json)
            shown += 1
            if count is not None and shown >= count:
                return
    if follow:
        left = None if count is None else count - shown
        if obj.multi:  # a cell that goes away is said and followed again by cellops.follow
            for doc in itertools.islice(cellops.follow(obj), left):
                _echo_event(doc, as_json)
            return
        _follow(reader, left, as_json)


def _follow(reader: logview.Reader, left: int | None, as_json: bool) -> None:
    """Follow the log through Redis going away a while (a restart, a failover): said once on
    standard error, then the events from where the reader stopped when Redis is back."""
    import redis

    down = False
    while left is None or left > 0:
        try:
            if down:
                reader.client.ping()
                click.echo("drain: Redis answers again; following on", err=True)
                down = False
            for doc in reader.follow(lambda: False):
                _echo_event(doc, as_json)
                if left is not None:
                    left -= 1
                    if left <= 0:
                        return
        except redis.RedisError as exc:
            if not down:
                fail(f"Redis unreachable ({exc}); following on when it is back")
                down = True
            time.sleep(FOLLOW_RETRY_S)


def _trace_text(doc: dict[str, Any]) -> None:
    rcpts = ",".join(doc["recipients"])
    click.echo(safe(f"{doc['id']} {doc['message_id'] or '-'} from=<{doc['sender']}> to=<{rcpts}> "
                    f"state={doc['state']}"))
    for ev in doc["events"]:
        click.echo("  " + safe(logview.text_line({**ev, "id": doc["id"], "message_id": doc["message_id"]})))


@click.command("trace")
@click.option("--id", "msg_id", type=MESSAGE_ID, help="queue id")
@click.option("--message-id", help="the Message-ID header (angle brackets optional)")
@click.option("--sender", help="envelope sender")
@click.option("--recipient", help="envelope recipient address, or @domain")
@click.option("--since", callback=_time, help="received from: ISO 8601, unix seconds, or ago (15m, 2h, 7d)")
@click.option("--until", callback=_time, help="received until (same forms)")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one document per message")
@pass_ctx
def trace(obj: Context, msg_id: str | None, message_id: str | None, sender: str | None, recipient: str | None,
          since: float | None, until: float | None, as_json: bool) -> None:
    """Each matching message's history: every event with time, attempt and reply."""
    if recipient is not None and recipient.strip() in ("", "@"):
        raise click.BadParameter("give an address or @domain", param_hint="--recipient")
    # An empty value (a script's unset variable) selected nothing and so traced every message.
    for hint, given in (("--id", msg_id), ("--message-id", message_id), ("--sender", sender)):
        if given is not None and not given.strip():
            raise click.BadParameter("is empty (the null sender is not indexed: find its mail by"
                                     " --recipient or --id)" if hint == "--sender" else "is empty", param_hint=hint)
    if since is not None and until is not None and until < since:
        raise click.BadParameter("--until is before --since", param_hint="--until")
    q = history.Query(msg_id, message_id, sender, recipient.strip() if recipient else None, since, until)
    docs = (cells_trace(obj, q, time.time()) if obj.multi
            else history.trace(obj.client.redis, q, time.time(), obj.settings.trace_retention_s))
    if not docs:
        raise InputError(f"unknown message id: {msg_id}" if msg_id else "0 messages matched")
    for doc in docs:
        if as_json:
            click.echo(json.dumps(doc, separators=(",", ":")))
        else:
            _trace_text(doc)


def _show_text(doc: dict[str, Any]) -> None:
    place = {k: doc[k] for k in ("lane", "owner", "domain", "why", "position") if k in doc}
    due = f" until {logview.stamp(doc['due'])}" if "due" in doc else ""
    lines = [
        f"id: {doc['id']}",
        f"state: {doc['state']}{due} " + " ".join(f"{k}={v}" for k, v in place.items()),
        f"message-id: {doc.get('message_id') or '-'}",
        f"sender: <{doc['sender']}>",
        f"recipients: {', '.join(doc['recipients'])}",
        f"size: {doc.get('size')}  attempts: {doc.get('attempts')}",
        f"last reply: {doc.get('last_reply') or '-'}",
    ]
    if doc.get("reasons"):
        lines.append(f"reasons: {', '.join(doc['reasons'])}")
    if doc.get("damaged"):
        lines.append(f"damaged: {'; '.join(doc['damaged'])}")
    for line in lines:
        click.echo(safe(line.rstrip()))
    if doc.get("headers"):
        click.echo("headers:")
        for name, value in doc["headers"]:
            click.echo("  " + safe(f"{name}: {value}"))
    click.echo("history:")
    for ev in doc["events"]:
        click.echo("  " + safe(logview.text_line({**ev, "id": doc["id"], "message_id": doc.get("message_id")})))


@click.command("show")
@click.argument("msg_id", metavar="ID", type=MESSAGE_ID)
@click.option("--json", "as_json", is_flag=True, help="one JSON document")
@click.option("--raw", is_flag=True, help="the message's bytes, while drain keeps them")
@pass_ctx
def show(obj: Context, msg_id: str, as_json: bool, raw: bool) -> None:
    """One message in any state: where it is, envelope, headers, attempts, history."""
    doc, data = (cells_show(obj, msg_id, raw) if obj.multi
                 else where.show(obj.client.redis, msg_id, obj.settings.trace_retention_s, with_raw=raw))
    if raw:
        if data is None:
            raise InputError(f"the bytes of {msg_id} are no longer kept (state {doc['state']})")
        damage = [p for p in doc.get("damaged", ()) if str(p).startswith("field raw")]
        if damage:  # they were written out as the message: the stored, damaged, compressed bytes
            raise InputError(f"the bytes of {msg_id} are damaged in Redis ({damage[0]}); "
                             "`drain quarantine export` writes them as stored")
        if sys.stdout.isatty():
            for line in data.decode("utf-8", "backslashreplace").splitlines():
                click.echo(safe(line))
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        return
    if as_json:
        emit(doc)
    else:
        _show_text(doc)
