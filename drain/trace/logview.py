"""`drain log`: the events stream read as a delivery log, one event a line, each with its
message's queue id and Message-ID so that grep finds every line of one message.

Text lines look like maillog's: time, queue id, Message-ID, event, then its fields as
key=value (values with spaces or quotes JSON-quoted). JSON lines have stable names:
{"event","time","id","message_id", ...the event's fields}. Hostile text is made safe by the
caller (cli/terminal.safe for terminals; JSON escapes it itself).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from drain.store import events, keys, lookup
from drain.store.eventlog import MessageIds, json_line

PAGE = 1000
__all__ = ["Reader", "json_line", "stamp", "text_line"]


def stamp(ts: float) -> str:
    """ISO 8601 UTC with milliseconds, as log lines start (a time no date can hold: as a number)."""
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"
    except (OverflowError, ValueError, OSError):
        return repr(ts)


def _value(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    if not isinstance(v, str) or (text and all(c not in text for c in ' "=')):
        return text
    return json.dumps(text, ensure_ascii=False)


def text_line(doc: dict[str, Any]) -> str:
    """time id message-id event key=value..."""
    rest = " ".join(f"{k}={stamp(v) if k == 'next_attempt' and isinstance(v, (int, float)) else _value(v)}"
                    for k, v in doc.items()
                    if k not in ("event", "time", "id", "message_id", "stream_id") and v not in ("", None))
    line = f"{stamp(doc['time'])} {doc['id']} {doc.get('message_id') or '-'} {doc['event']}"
    return f"{line} {rest}" if rest else line


class Reader:
    """Reads events in order and gives each its message's Message-ID (from its received
    event, looked up through the index when it was not read on the way)."""

    def __init__(self, client: redis.Redis, retention_s: float) -> None:
        self.client = client
        self.ids = MessageIds(client, retention_s)
        self.last = "0-0"
        self.following = False  # follow() has taken its starting point (the stream may have been empty)

    def _fill(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.ids.fill(docs)

    def since(self, ts: float | None) -> Iterator[dict[str, Any]]:
        """Every kept event from ts (None: the oldest kept) up to now."""
        start = f"{int(ts * 1000)}-0" if ts is not None else "-"
        while True:
            entries = lookup.page(self.client, start, "+", PAGE)
            if entries:
                self.last = entries[-1][0]
                start = lookup.after(self.last)
            yield from self._fill(events.decode_all(entries))
            if len(entries) < PAGE:
                return

    def follow(self, stop: Callable[[], bool], block_ms: int = 1000) -> Iterator[dict[str, Any]]:
        """Events as they are recorded after the last one read (XREAD BLOCK), until stop()."""
        if self.last == "0-0" and not self.following:  # nothing read before: from the newest event on
            newest: Any = self.client.xrevrange(keys.EVENTS, count=1)
            if newest:
                sid = newest[0][0]
                self.last = sid.decode() if isinstance(sid, bytes) else str(sid)
        # A later call goes on from here: over cells each round is one short call per cell, and
        # a stream still empty at the first call must not skip what came since to its newest.
        self.following = True
        while not stop():
            reply: Any = self.client.xread({keys.EVENTS: self.last}, count=PAGE, block=block_ms)
            for _stream, entries in reply or ():
                if entries:
                    sid = entries[-1][0]
                    self.last = sid.decode() if isinstance(sid, bytes) else str(sid)
                yield from self._fill(events.decode_all(entries))
