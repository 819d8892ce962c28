"""Cells: drain spread over several independent Redis servers.

`DRAIN_REDIS_URL` may list several URLs, separated by commas (or spaces). Each URL is a
cell: a whole drain of its own (books, queues, RQ queue, settings keys), on a standalone or
Sentinel-managed Redis. A message lives wholly in one cell; nothing ever crosses cells.

Cells are named by their place in the list: `c0`, `c1`, ... So add a cell at the end of
the list and never reorder or remove one while it holds mail (a name is part of every id).

With more than one cell, a message id names its cell: `c1.2f3a` is message `2f3a` of cell
`c1`. With one cell, ids stay as they always were (no prefix).

Why cells and not Redis Cluster: RQ's multi-key commands cross hash slots (rq issue 1942),
and an independent cell confines a Redis failure to its own share of the mail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis

from drain.errors import ConfigError
from drain.settings import Settings

# A new URL starts after a comma or blank that is followed by a scheme; the commas inside a
# Sentinel URL's host list (`redis+sentinel://h1:26379,h2:26379/svc`) are not followed by one.
_SPLIT = re.compile(r"[,\s]+(?=[a-z][a-z0-9+.-]*://)", re.IGNORECASE)
SEPARATOR = "."


@dataclass(frozen=True)
class Cell:
    """One Redis of a multi-cell drain: its name (c0, c1, ...) and URL."""

    name: str
    url: str

    def settings(self, settings: Settings) -> Settings:
        """The settings with this cell's URL alone: what a single-cell drain runs with."""
        return settings.with_(redis_url=self.url)

    def qualify(self, local_id: str) -> str:
        return f"{self.name}{SEPARATOR}{local_id}"


def split_urls(text: str) -> list[str]:
    """The URLs of DRAIN_REDIS_URL (one or several)."""
    return [part.strip().rstrip(",") for part in _SPLIT.split(text.strip()) if part.strip().rstrip(",")]


def cells_of(settings: Settings) -> list[Cell]:
    """The configured cells; one unnamed-in-ids cell for a single URL (or the embedded Redis)."""
    if settings.redis_url is None:
        return []
    urls = split_urls(settings.redis_url)
    if len(set(urls)) != len(urls):
        raise ConfigError("DRAIN_REDIS_URL lists the same Redis twice: each cell needs its own Redis")
    return [Cell(f"c{index}", url) for index, url in enumerate(urls)]


def is_multi(settings: Settings) -> bool:
    return len(cells_of(settings)) > 1


def parse_id(qualified: str, cells: list[Cell]) -> tuple[Cell, str]:
    """(cell, id within the cell) for an id like `c1.2f3a`; InputError-like ConfigError otherwise."""
    name, sep, local = qualified.partition(SEPARATOR)
    for cell in cells:
        if sep and cell.name == name and local:
            return cell, local
    names = ", ".join(c.name for c in cells)
    raise ConfigError(f"message id {qualified[:80]!r} does not name a cell (ids look like c0.1f; cells: {names})")


def down(exc: BaseException) -> bool:
    """Whether a Redis error means the cell cannot be reached (as opposed to a refusal)."""
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) and not isinstance(
        exc, redis.AuthenticationError)
