"""Points in time as operators type them for --since and --until: an ISO 8601 date or time
(UTC unless it says otherwise), unix seconds, or a time ago (`90s`, `15m`, `2h`, `7d`)."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

from drain.errors import InputError

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$", re.ASCII)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# The latest time taken: the end of year 9999, the last a date can show.
LATEST = 253402300799.0


def parse(text: str, now: float | None = None) -> float:
    """Unix seconds for the text; InputError (one line) when it is none of the forms, or a time
    before 1970 or after 9999 (`99999999d` ago, which Redis cannot turn into a stream id)."""
    moment = _parse(text, time.time() if now is None else now)
    if not 0 <= moment <= LATEST:
        raise InputError(f"not a time between 1970 and 9999: {text.strip()!r}")
    return moment


def _parse(text: str, now: float) -> float:
    value = text.strip()
    ago = _AGO.match(value.lower())
    if ago:
        return now - float(ago.group(1)) * _UNIT[ago.group(2)]
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if math.isfinite(number) and number >= 0 and re.fullmatch(r"\d+(\.\d+)?", value, re.ASCII):
        return number
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InputError(f"not a time: {value!r} (ISO 8601, unix seconds, or ago as 90s, 15m, 2h, 7d)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
