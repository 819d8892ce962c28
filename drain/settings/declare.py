"""The one declaration of a setting: a dataclass field whose metadata says which variable sets it,
how its text is parsed (type and bounds), its group, a one-line doc and, when the default is
not a plain value, how the README shows it. `read` builds every field from the environment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from drain.settings.values import UNSET, Parse

GROUPS = ("store", "relay", "worker", "validation", "flow", "retry", "smtpd", "ops")


@dataclass(frozen=True)
class Var:
    """How one setting is read from the environment."""

    name: str
    parse: Parse
    group: str
    doc: str
    # The README's text for the default, when the default's own text would not do.
    shown: str | None = None
    # Computes the default from the environment when the variable is unset (host names).
    fallback: Callable[[Mapping[str, str]], Any] | None = None


def setting(name: str, default: Any, parse: Parse, group: str, doc: str, *, shown: str | None = None,
            fallback: Callable[[Mapping[str, str]], Any] | None = None, secret: bool = False) -> Any:
    """A Settings field read from the variable `name` (kept out of repr, and so out of logs, when secret)."""
    if group not in GROUPS:
        raise ValueError(f"unknown settings group {group!r}")
    return dataclasses.field(default=default, repr=not secret,
                             metadata={"var": Var(name, parse, group, doc, shown, fallback)})


@dataclass(frozen=True)
class Declared:
    field: str
    var: Var
    default: Any

    @property
    def shown(self) -> str:
        """The default as the README's settings tables write it (without backticks)."""
        if self.var.shown is not None:
            return self.var.shown
        value = self.default
        if value is None:
            return "unset"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, tuple) and not value:
            return ""
        return str(value)


def declared(cls: type) -> Iterator[Declared]:
    """Every setting of a settings dataclass, in declaration order."""
    for f in dataclasses.fields(cls):
        var = f.metadata.get("var")
        if isinstance(var, Var):
            yield Declared(f.name, var, f.default)


def read(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    """Field name -> value for every declared setting, parsed from env (ConfigError when bad)."""
    values: dict[str, Any] = {}
    for d in declared(cls):
        raw = env.get(d.var.name)
        value = UNSET if raw is None or raw == "" else d.var.parse(raw, d.var.name)
        if value is UNSET:
            value = d.var.fallback(env) if d.var.fallback is not None else d.default
        values[d.field] = value
    return values
