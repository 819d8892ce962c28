"""Escaping and the number and time formats the status page's parts share.

Every value shown on the page goes through `esc`: much of it (senders, recipients, subjects of
quarantined mail, domain names) was written by whoever sent the mail.
"""

from __future__ import annotations

import html
import time

from drain.durations import human


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def num(value: float) -> str:
    return f"{value:,.0f}"


def dur(seconds: float | None) -> str:
    return human(seconds)


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def per_s(rate: float) -> str:
    return f"{rate:,.1f}/s" if rate < 100 else f"{rate:,.0f}/s"
