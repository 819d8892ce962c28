"""How the long-running commands (worker, smtpd, serve) write their logs: text or JSON lines.

`DRAIN_LOG_FORMAT=json` gives one JSON object per line on standard error, with stable fields:
`time` (UTC, ISO 8601), `level`, `component` (worker, smtpd, serve), `logger`, `event` (the
message's template, the same for every occurrence, so a collector can group on it),
`message` (the text), `message_id` when the record is about one message, and `exception`
when there is one. Anything else: the usual text lines.

A stdlib Formatter rather than python-json-logger: the fields are derived (event from the
template, component from the command), so the library would need as much configuration as
this takes code, and json.dumps already does the part that matters (escaping: hostile text
from a message or a relay cannot break a line or carry a control character).

Both formats pass every line through `redact`: a URL with a password shows it as `***`
even if some library logs one (drain's own messages never contain them).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# scheme://user:password@ or scheme://:password@ (Redis, relay, Sentinel URLs).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@]+@", re.IGNORECASE)


def redact(text: str) -> str:
    """The text with the password of any URL in it replaced by ***."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "event": redact(str(getattr(record, "event", None) or record.msg)),
            "message": redact(record.getMessage()),
        }
        message_id = getattr(record, "message_id", None)
        if message_id is not None:
            line["message_id"] = str(message_id)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        # ensure_ascii: newlines, ESC and every other control or non-ASCII character is escaped.
        return json.dumps(line, ensure_ascii=True)


_announcer: logging.Handler | None = None


def announce(text: str) -> None:
    """A start-up line ("listening on ...") for whoever runs the command: a plain line on
    stderr, or in JSON mode a JSON line like every other (whatever the log level)."""
    if _announcer is None:
        print(redact(text), file=sys.stderr, flush=True)
        return
    _announcer.handle(logging.LogRecord("drain", logging.INFO, __file__, 0, text, None, None))


def configure(log_format: str, component: str, level: int | str | None = None,
              stream: TextIO | None = None) -> logging.Handler:
    """Make the root logger write `log_format` ("text" or "json") lines to stderr (or stream).
    Replaces the root's handlers; RQ's loggers then write through it too."""
    global _announcer
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(component) if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    if level is not None:
        root.setLevel(level)
    _announcer = handler if log_format == "json" else None
    return handler
