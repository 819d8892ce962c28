"""Escaping and the number and time formats the status page's parts share.

Every value shown on the page goes through `esc`: much of it (senders, recipients, subjects of
quarantined mail, domain names) was written by whoever sent the mail.
"""

from __future__ import annotations

import html
import time

from drain.durations import human

# The most characters of one value shown (a 3,000-character recipient domain is mail's text).
SHOWN_CHARS = 300


def visible(text: str) -> str:
    """text with every character a screen would act on or hide (controls, ESC, bidi overrides,
    zero-width marks: what str.isprintable refuses) written as a Python escape (\\x1b, \\u202e)."""
    return text if text.isprintable() else "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def esc(value: object) -> str:
    """A value for the page: controls made visible, cut to SHOWN_CHARS, HTML-escaped."""
    text = visible(str(value))
    return html.escape(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…", quote=True)


def num(value: float) -> str:
    return f"{value:,.0f}"


def dur(seconds: float | None) -> str:
    return human(seconds)


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def per_s(rate: float) -> str:
    return f"{rate:,.1f}/s" if rate < 100 else f"{rate:,.0f}/s"
