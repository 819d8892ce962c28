"""Events as log lines, and DRAIN_EVENT_LOG: events also written as JSON lines, to stdout
(`-`; standard error in an operator command, see operator_command) or appended to a file,
by whichever process made them (workers, the SMTP ingress, operator commands), for
journald, Loki or Elastic.

A script's events are contiguous in the stream: it returns the first and last stream ids
(lib.recorded), and the writer reads that span back. Every line carries its message's
Message-ID (from the message's received event, remembered, or found through the index).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import redis

from drain.settings import Settings
from drain.store import events, keys, lookup

log = logging.getLogger(__name__)
_lock = threading.Lock()
# Message-IDs remembered by queue id.
REMEMBERED = 100_000


class MessageIds:
    """Fills in each event's message_id, remembering the last REMEMBERED messages'."""

    def __init__(self, client: redis.Redis, retention_s: float) -> None:
        self.client = client
        self.retention_s = retention_s
        self.known: OrderedDict[str, str] = OrderedDict()

    def _remember(self, msg_id: str, mid: str) -> None:
        self.known[msg_id] = mid
        self.known.move_to_end(msg_id)
        while len(self.known) > REMEMBERED:
            self.known.popitem(last=False)

    def fill(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for doc in docs:
            if doc["event"] == "received":
                self._remember(doc["id"], str(doc.get("message_id", "")))
        unknown = sorted({d["id"] for d in docs if d["id"] not in self.known})
        if unknown:
            now = time.time()
            found = lookup.of_messages(self.client, unknown, lookup.days(now - self.retention_s - 86400, now))
            for msg_id, evs in found.items():
                first = next((e for e in evs if e["event"] == "received"), {})
                self._remember(msg_id, str(first.get("message_id", "")))
        for doc in docs:
            doc["message_id"] = self.known.get(doc["id"], "")
        return docs


def json_line(doc: dict[str, Any]) -> str:
    """{"event","time","id","message_id", ...its fields}: hostile text escaped by JSON itself."""
    out = {"event": doc["event"], "time": doc["time"], "id": doc["id"], "message_id": doc.get("message_id", "")}
    out.update((k, v) for k, v in doc.items() if k not in out and k != "stream_id")
    return json.dumps(out, separators=(",", ":"))


_writers: dict[int, MessageIds] = {}
# Where `-` writes: standard output for the workers and the SMTP ingress (their output is a
# log), standard error in an operator command, whose standard output is its answer (--json).
_operator = False


def operator_command(on: bool = True) -> None:
    """Send `-` to standard error from now on (on=False: back to standard output)."""
    global _operator
    _operator = on


def write_span(client: redis.Redis, settings: Settings, span: Any) -> None:
    """Write the events between two stream ids (a script's lib.recorded reply) when
    DRAIN_EVENT_LOG is set. A failure to write is logged, never raised: the move is done."""
    if not settings.event_log or not isinstance(span, Sequence) or len(span) < 2 or not span[0]:
        return
    try:
        if id(client) not in _writers and len(_writers) >= 8:
            _writers.clear()  # a process keeps one or two clients; tests make many
        ids = _writers.setdefault(id(client), MessageIds(client, settings.trace_retention_s))
        docs = ids.fill(events.decode_all(client.xrange(keys.EVENTS, span[0], span[1])))
        text = "".join(json_line(d) + "\n" for d in docs)
        with _lock:
            if settings.event_log == "-":
                stream = sys.stderr if _operator else sys.stdout
                stream.write(text)
                stream.flush()
            else:
                with open(settings.event_log, "a", encoding="utf-8") as out:
                    out.write(text)
    except (OSError, redis.RedisError) as exc:
        log.warning("could not write events to DRAIN_EVENT_LOG: %s", exc)
