"""Operator patterns (quarantine rules) run on RE2: matching takes time linear in the text
whatever the pattern, so no rule can hang a worker or the CLI on a hostile header (no
catastrophic backtracking, as `(a+)+$` has in Python's `re`). RE2 has no backreferences
or lookaround: patterns that use them are refused with a clear message."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

from drain.errors import ConfigError


@lru_cache(maxsize=256)
def compile_pattern(pattern: str, ignore_case: bool = True) -> Any:
    """The compiled pattern, or ConfigError saying why RE2 cannot take it."""
    options = re2.Options()
    options.log_errors = False  # RE2 would print its own complaint on standard error
    options.case_sensitive = not ignore_case
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ConfigError(f"bad header pattern: {detail} (patterns use RE2 syntax: no backreferences or"
                          " lookaround)") from None


def search(pattern: str, text: str) -> bool:
    """True if the pattern matches anywhere in text (case-insensitive)."""
    return compile_pattern(pattern).search(text) is not None
