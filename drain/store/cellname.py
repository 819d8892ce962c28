"""The name a Redis has as a cell (drain:cell), checked by every command that uses cells.

Cells are named by their place in DRAIN_REDIS_URL, and every id names its cell: a list in
another order, or one Redis listed twice under two spellings, would make ids name other
messages. The first command to use a Redis as a cell writes its name there; a list naming
it otherwise is refused.
"""

from __future__ import annotations

import redis

from drain.errors import ConfigError
from drain.store import keys
from drain.store.cells import Cell
from drain.store.connection import redacted

# (URL, cell name) pairs this process has found right: a producer checks each cell once.
_CHECKED: set[tuple[str, str]] = set()


def check_name(client: redis.Redis, cell: Cell) -> None:
    """Refuse a Redis that drain knows as another cell (ConfigError): its name is set by the
    first command that uses it as a cell (a role that may not write only compares). Listing
    the cells in another order, or one Redis twice under two spellings (localhost and
    127.0.0.1), gave ids naming other messages and books counting the same mail twice. A
    cell that does not answer is not checked (the command says it is down)."""
    if (cell.url, cell.name) in _CHECKED:
        return
    pipe = client.pipeline(transaction=False)
    pipe.set(keys.CELL_NAME, cell.name, nx=True)
    pipe.get(keys.CELL_NAME)
    try:
        _claimed, found = pipe.execute(raise_on_error=False)
    except redis.RedisError:
        return
    if found == cell.name.encode():
        _CHECKED.add((cell.url, cell.name))
    elif isinstance(found, bytes):
        known = found.decode("utf-8", "replace")[:20]
        raise ConfigError(f"DRAIN_REDIS_URL lists {redacted(cell.url)} as {cell.name}, but it is cell {known!r} "
                          f"to drain: list the cells in the same order everywhere, each Redis once (if the cells "
                          f"were really renumbered, DEL {keys.CELL_NAME} on that Redis)")
