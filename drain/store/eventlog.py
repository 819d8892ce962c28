"""DRAIN_EVENT_LOG: events also written as JSON lines, to stdout (`-`) or appended to a file,
by whichever process made them (workers, the SMTP ingress, operator commands), for journald,
Loki or Elastic. A script's events are contiguous in the stream: it returns the first and
last stream ids (lib.recorded), and the writer reads that span back."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any

import redis

from drain.settings import Settings
from drain.store import events, keys

log = logging.getLogger(__name__)
_lock = threading.Lock()


def line(doc: dict[str, Any]) -> str:
    """One event as a JSON line (hostile text escaped by JSON itself, non-ASCII included)."""
    return json.dumps({k: v for k, v in doc.items() if k != "stream_id"}, separators=(",", ":"))


def write_span(client: redis.Redis, settings: Settings, span: Any) -> None:
    """Write the events between two stream ids (a script's lib.recorded reply) when
    DRAIN_EVENT_LOG is set. A failure to write is logged, never raised: the move is done."""
    if not settings.event_log or not isinstance(span, Sequence) or len(span) < 2 or not span[0]:
        return
    try:
        docs = events.decode_all(client.xrange(keys.EVENTS, span[0], span[1]))
        text = "".join(line(d) + "\n" for d in docs)
        with _lock:
            if settings.event_log == "-":
                sys.stdout.write(text)
                sys.stdout.flush()
            else:
                with open(settings.event_log, "a", encoding="utf-8") as out:
                    out.write(text)
    except (OSError, redis.RedisError) as exc:
        log.warning("could not write events to DRAIN_EVENT_LOG: %s", exc)
