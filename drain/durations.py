"""Durations as people read them ("under 1 s", "42 s", "7 min", "2 h 05 min", "3 d 4 h").

The one formatter of durations for the status page and the admin scripts. Standard library
only: scripts/_drain_cmd.py loads this file by path under any Python 3.11, without drain
installed. (humanize's naturaldelta rounds to one unit, "an hour", and precisedelta spells
units out, "1 hour and 5 minutes"; both would need this much code again to read like the page.)
"""

from __future__ import annotations


def human(seconds: float | None, none: str = "—") -> str:
    """`seconds` rounded to the two largest units that matter; `none` for None (unknown)."""
    if seconds is None:
        return none
    if seconds < 1:
        return "under 1 s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h" + (f" {s % 3600 // 60:02d} min" if s % 3600 // 60 else "")
    return f"{s // 86400} d" + (f" {s % 86400 // 3600} h" if s % 86400 // 3600 else "")
